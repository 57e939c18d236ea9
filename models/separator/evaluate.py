"""Evaluate a separator on test mixtures: SDR, SDRi, SI-SDRi per class and overall, Silence-SDR for absent queries.

Test data comes either from shard dirs (each sample's own query, `silent_target` samples count as absent-class
queries) or from a demo-corpus scene manifest with its audit stems (each labelled stem of a test scene is queried
by its label). On top of that every present-class item is also queried once with a class that is absent from its
mixture (chosen from the test vocabulary with a seeded RNG), which gives the Silence-SDR / Silence-SISDR of
ClearSep Table 3. SI-SDR here is zero-mean (the torchmetrics / CLAPSep convention).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from models import metrics as M
from models.separator.data import query_texts, read_shard_dir
from models.separator.infer import Separator
from storage.audio import AudioConfig, load_audio


@dataclass
class TestItem:
    key: str
    mix: np.ndarray
    target: np.ndarray
    positive: str | None
    negative: str | None
    cls: str
    present: set[str]
    silent: bool


def items_from_shards(dirs: list[str | Path], sample_rate: int) -> Iterator[TestItem]:
    for d in dirs:
        for s in read_shard_dir(d, sample_rate):
            meta = s["json"]
            pos, neg, _ = query_texts(meta)
            present = {str(x) for x in (meta.get("target_labels") or []) + (meta.get("residual_labels") or [])}
            cls = ", ".join(meta.get("target_labels") or []) or (pos or f"not {neg}")
            yield TestItem(s["__key__"], s["mix"], s["target"], pos, neg, cls, present, bool(meta.get("silent_target")))


def items_from_manifest(path: str | Path, sample_rate: int, split: str = "test") -> Iterator[TestItem]:
    """Scenes of `split` from a natural_scene manifest (or a corpus dir containing manifests/scenes) with their
    audit stems; the 'background' stem is never queried."""
    from storage.manifests import iter_rows

    p = Path(path)
    scenes_dir = p / "manifests" / "scenes" if (p / "manifests" / "scenes").is_dir() else p
    audit_dir = scenes_dir.parent / "audit"
    if not audit_dir.is_dir():
        raise FileNotFoundError(f"{audit_dir}: audit stem manifest not found next to the scene manifest {scenes_dir}")
    stems: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in iter_rows(audit_dir, expect="audit_stem"):
        stems[row["scene_id"]].append(row)
    acfg = AudioConfig(sample_rate=sample_rate, allow_silent=True, min_duration_s=0.0)
    for row in iter_rows(scenes_dir, expect="natural_scene"):
        if row["split"] != split:
            continue
        mix = load_audio(row["path"], acfg)
        present = set(row["event_labels"])
        for stem in stems.get(row["clip_id"], []):
            if stem["label"] == "background":
                continue
            target = load_audio(stem["path"], acfg)
            n = min(len(mix), len(target))
            yield TestItem(f"{row['clip_id']}/{stem['label']}", mix[:n], target[:n], stem["label"], None,
                           stem["label"], present, False)


def _summary(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def evaluate(sep: Separator, items: Iterable[TestItem], absent_queries: bool = True, seed: int = 0,
             batch: int = 16) -> dict[str, Any]:
    """Run the separator over `items` and aggregate. Returns a JSON-ready report."""
    items = list(items)
    if not items:
        raise ValueError("no test items to evaluate")
    vocab = sorted({i.cls for i in items if not i.silent and "," not in i.cls and not i.cls.startswith("not ")}
                   | {p for i in items for p in i.present})
    rng = np.random.default_rng(seed)
    sr = sep.sample_rate
    per_class: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    overall: dict[str, list[float]] = defaultdict(list)
    silence: dict[str, list[float]] = defaultdict(list)

    queries: list[tuple[TestItem, str | None, str | None, bool]] = []
    for it in items:
        queries.append((it, it.positive, it.negative, it.silent))
        if absent_queries and not it.silent:
            absent = [v for v in vocab if v not in it.present]
            if absent:
                queries.append((it, absent[int(rng.integers(len(absent)))], None, True))
    for i in range(0, len(queries), batch):
        chunk = queries[i:i + batch]
        est, gate = sep.separate([q[0].mix for q in chunk], sr, [q[1] for q in chunk], [q[2] for q in chunk], return_gate=True)
        for (it, pos, neg, silent), e, g in zip(chunk, est, gate):
            if silent:
                silence["silence_sdr"].append(float(M.silence_sdr(e[None], it.mix[None])[0]))
                silence["silence_sisdr"].append(float(M.silence_sisdr(e[None], it.mix[None])[0]))
                silence["gate"].append(float(g))
                continue
            vals = {"sdr": float(M.sdr(e[None], it.target[None])[0]),
                    "sdri": float(M.sdri(e[None], it.target[None], it.mix[None])[0]),
                    "si_sdr": float(M.si_sdr(e[None], it.target[None], zero_mean=True)[0]),
                    "si_sdri": float(M.si_sdri(e[None], it.target[None], it.mix[None], zero_mean=True)[0])}
            for k, v in vals.items():
                per_class[it.cls][k].append(v)
                overall[k].append(v)
    report = {
        "checkpoint": sep.info(),
        "n_items": len(items),
        "overall": {k: _summary(v) for k, v in overall.items()} | {"n": len(overall.get("sdr", []))},
        "per_class": {c: {k: _summary(v) for k, v in d.items()} | {"n": len(d["sdr"])} for c, d in sorted(per_class.items())},
        "absent_queries": {k: _summary(v) for k, v in silence.items()} | {"n": len(silence.get("silence_sdr", [])),
                                                                          "median_silence_sdr": float(np.median(silence["silence_sdr"])) if silence.get("silence_sdr") else float("nan")},
        "gate_threshold": sep.gate_threshold,
    }
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'class':<28}{'n':>5}{'SDR':>9}{'SDRi':>9}{'SI-SDRi':>9}"]
    for cls, r in report["per_class"].items():
        lines.append(f"{cls[:27]:<28}{r['n']:>5}{r['sdr']:>9.2f}{r['sdri']:>9.2f}{r['si_sdri']:>9.2f}")
    o = report["overall"]
    if o.get("n"):
        lines.append(f"{'OVERALL':<28}{o['n']:>5}{o['sdr']:>9.2f}{o['sdri']:>9.2f}{o['si_sdri']:>9.2f}")
    a = report["absent_queries"]
    if a.get("n"):
        lines.append(f"absent-class queries: n={a['n']} Silence-SDR mean {a['silence_sdr']:.1f} dB, "
                     f"median {a['median_silence_sdr']:.1f} dB, Silence-SISDR {a['silence_sisdr']:.1f} dB")
    return "\n".join(lines)
