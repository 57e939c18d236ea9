"""Evaluate a separator on test items: SDR, SDRi, SI-SDRi overall and per class, with the figures an SDRi needs
beside it to be read honestly, and Silence-SDR for absent-class queries.

What one `evaluate` call reports (per item set; engine/evaluation.py evaluates synthetic tuples and natural scenes
as two sets):
- `overall`: means over the present-target queries (each item once) of SDR, SDRi, SI-SDR, SI-SDRi (SI-SDR is
  zero-mean, the torchmetrics / CLAPSep convention), each with `<metric>_ci95`: a 95 % percentile-bootstrap
  interval of the mean (`BOOTSTRAP_RESAMPLES` resamples of the items, generator seeded with the evaluation seed, so
  the same items give the same interval; null below 2 items).
- `silent_baseline_sdri`: the SDRi an all-zero estimate scores, ``SDR(0, x) - SDR(X, x) = -SDR(X, x)`` (the eps
  clamp of `models.metrics` makes ``SDR(0, x)`` exactly 0 dB). It is positive wherever the target is quieter than
  the rest of its mixture (+2.3 dB on average on real mixtures), so an SDRi only says something above it. It does
  not depend on the checkpoint.
- `silent_share`: the share of present-target queries whose estimate came back silent: estimate energy at least
  `SILENT_BELOW_DB` (60 dB) below the mixture's (no eps), which includes every estimate the presence gate closed
  (exact zeros).
- `per_class`: the same means grouped by the target's class label (`TestItem.classes`, compared by
  `models.labels.slug` and named by the first written form seen). An item whose target holds several labels (a
  synthetic tuple extracting two classes) counts under each of them, so the classes' n may sum to more than the
  overall n; the overall figures count every item once.
- `absent_queries`: each present item is queried once more with a class absent from its mixture (drawn from the
  set's vocabulary with a seeded generator, labels compared by slug, worded by `phrase`, default `phrase_for`),
  plus every `silent` item: Silence-SDR / Silence-SISDR of ClearSep Table 3.
- `items`: per-item figures (key, classes, sdri, si_sdri, silent_baseline_sdri, silent), so two checkpoints can be
  compared pairwise on the same items (`paired_ci`).

Query wording is the caller's: every item carries its positive / negative text. Shard tuples carry their own
(`items_from_shards`); the natural-scene policy the run and `stemforge evaluate` share lives in engine/evaluation.py
(it reads manifests). Whatever the wording, the `Separator` encodes a label-like text as its label's phrase
(`models.labels.canonical_query`), so a label written `Dog`, `dog` or `a dog barking` is scored as one query.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from models import metrics as M
from models.labels import phrase_for, slug, unique_labels
from models.separator.data import ShardSource, query_texts
from models.separator.infer import Separator

SILENT_BELOW_DB = 60.0  # an estimate this far below the mixture's energy counts as a silent answer
BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95
METRICS = ("sdr", "sdri", "si_sdr", "si_sdri", "silent_baseline_sdri")


@dataclass
class TestItem:
    __test__ = False  # not a pytest test class despite the name

    key: str
    mix: np.ndarray
    target: np.ndarray
    positive: str | None
    negative: str | None
    classes: tuple[str, ...]  # the target's class label(s): the per-class rows it counts in
    present: set[str]  # every label in the mixture: absent-class queries avoid them
    silent: bool  # the target is absent (an all-zero target): scored by Silence-SDR, not SDRi


def items_from_shards(dirs: Sequence[str | Path], sample_rate: int) -> Iterator[TestItem]:
    """Shard samples with their own stored queries; `silent_target` samples are absent-class queries."""
    for d in dirs:
        for s in ShardSource([d], sample_rate):
            meta = s["json"]
            pos, neg, _ = query_texts(meta)
            present = {str(x) for x in (meta.get("target_labels") or []) + (meta.get("residual_labels") or [])}
            classes = tuple(str(c) for c in (meta.get("target_labels") or meta.get("positive_labels") or ["unlabelled"]))
            yield TestItem(s["__key__"], s["mix"], s["target"], pos, neg, classes, present, bool(meta.get("silent_target")))


def is_silent(estimate: np.ndarray, mixture: np.ndarray, below_db: float = SILENT_BELOW_DB) -> bool:
    """True when the estimate's energy is at least `below_db` under the mixture's (an all-zero estimate always is)."""
    e = float(np.sum(np.square(estimate, dtype=np.float64)))
    m = float(np.sum(np.square(mixture, dtype=np.float64)))
    return e <= m * 10.0 ** (-below_db / 10.0)


def mean_ci(values: Sequence[float], seed: int, level: float = CI_LEVEL,
            resamples: int = BOOTSTRAP_RESAMPLES) -> list[float] | None:
    """Percentile-bootstrap interval `[lo, hi]` of the mean; None below 2 values (no spread to resample)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // x.size)  # bound the index matrix at ~16 MB
    for i in range(0, resamples, chunk):
        k = min(chunk, resamples - i)
        means[i:i + k] = x[rng.integers(0, x.size, size=(k, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def paired_ci(a: dict[str, float], b: dict[str, float], seed: int) -> dict[str, Any]:
    """Mean and 95 % interval of a - b over the item keys both have (e.g. per-item SDRi of two checkpoints)."""
    keys = sorted(set(a) & set(b))
    diff = [a[k] - b[k] for k in keys]
    return {"n": len(keys), "mean": float(np.mean(diff)) if diff else float("nan"), "ci95": mean_ci(diff, seed)}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: _mean([r[k] for r in rows]) for k in METRICS}
    out["silent_share"] = _mean([float(r["silent"]) for r in rows])
    out["n"] = len(rows)
    return out


def evaluate(sep: Separator, items: Iterable[TestItem], absent_queries: bool = True, seed: int = 0,
             batch: int = 16, phrase: Callable[[str], str] = phrase_for) -> dict[str, Any]:
    """Run the separator over `items` and aggregate (see the module docstring). Returns a JSON-ready report."""
    items = list(items)
    if not items:
        raise ValueError("no test items to evaluate")
    vocab = unique_labels(sorted({p for i in items for p in i.present}))
    rng = np.random.default_rng(seed)
    sr = sep.sample_rate
    rows: list[dict[str, Any]] = []
    silence: dict[str, list[float]] = defaultdict(list)

    queries: list[tuple[TestItem, str | None, str | None, bool]] = []
    for it in items:
        queries.append((it, it.positive, it.negative, it.silent))
        if absent_queries and not it.silent:
            present = {slug(p) for p in it.present}
            absent = [v for v in vocab if slug(v) not in present]
            if absent:
                queries.append((it, phrase(absent[int(rng.integers(len(absent)))]), None, True))
    for i in range(0, len(queries), batch):
        chunk = queries[i:i + batch]
        est, gate = sep.separate([q[0].mix for q in chunk], sr, [q[1] for q in chunk], [q[2] for q in chunk], return_gate=True)
        for (it, _pos, _neg, silent), e, g in zip(chunk, est, gate):
            if silent:
                silence["silence_sdr"].append(float(M.silence_sdr(e[None], it.mix[None])[0]))
                silence["silence_sisdr"].append(float(M.silence_sisdr(e[None], it.mix[None])[0]))
                silence["gate"].append(float(g))
                continue
            mix_sdr = float(M.sdr(it.mix[None], it.target[None])[0])
            rows.append({"key": it.key, "classes": list(it.classes),
                         "sdr": float(M.sdr(e[None], it.target[None])[0]),
                         "sdri": float(M.sdri(e[None], it.target[None], it.mix[None])[0]),
                         "si_sdr": float(M.si_sdr(e[None], it.target[None], zero_mean=True)[0]),
                         "si_sdri": float(M.si_sdri(e[None], it.target[None], it.mix[None], zero_mean=True)[0]),
                         "silent_baseline_sdri": -mix_sdr, "silent": is_silent(e, it.mix)})
    overall = _summary(rows)
    for k in ("sdri", "si_sdri", "silent_baseline_sdri"):
        overall[f"{k}_ci95"] = mean_ci([r[k] for r in rows], seed)
    by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    names: dict[str, str] = {}  # slug -> the first written form seen: one row per class however it is written
    for r in rows:
        for c in unique_labels(r["classes"]):
            by_class[names.setdefault(slug(c), c)].append(r)
    sil = silence.get("silence_sdr", [])
    return {
        "checkpoint": sep.info(),
        "n_items": len(items),
        "overall": overall,
        "per_class": {c: _summary(rs) for c, rs in sorted(by_class.items())},
        "absent_queries": {k: _mean(v) for k, v in silence.items()} | {
            "n": len(sil), "median_silence_sdr": float(np.median(sil)) if sil else float("nan")},
        "gate_threshold": sep.gate_threshold,
        "silent_below_db": SILENT_BELOW_DB,
        "interval": {"level": CI_LEVEL, "method": "percentile bootstrap of the mean over items",
                     "resamples": BOOTSTRAP_RESAMPLES, "seed": seed},
        "items": [{k: r[k] for k in ("key", "classes", "sdri", "si_sdri", "silent_baseline_sdri", "silent")} for r in rows],
    }


def _ci(v: list[float] | None) -> str:
    return "-" if v is None else f"[{v[0]:.2f}, {v[1]:.2f}]"


def format_table(report: dict[str, Any]) -> str:
    """Per-class rows (by class label), the overall row with its 95 % intervals, and the absent-query line."""
    head = f"{'class':<28}{'n':>5}{'SDR':>9}{'SDRi':>9}{'SI-SDRi':>9}{'0-est':>9}{'silent':>8}"
    lines = [head]

    def row(name: str, r: dict[str, Any]) -> str:
        return (f"{name[:27]:<28}{r['n']:>5}{r['sdr']:>9.2f}{r['sdri']:>9.2f}{r['si_sdri']:>9.2f}"
                f"{r['silent_baseline_sdri']:>9.2f}{100 * r['silent_share']:>7.1f}%")

    for cls, r in report["per_class"].items():
        lines.append(row(cls, r))
    o = report["overall"]
    if o.get("n"):
        lines.append(row("OVERALL", o))
        lines.append(f"95% CI ({report['interval']['method']}): SDRi {_ci(o.get('sdri_ci95'))}, "
                     f"SI-SDRi {_ci(o.get('si_sdri_ci95'))}, all-zero estimate SDRi {_ci(o.get('silent_baseline_sdri_ci95'))}")
        lines.append(f"0-est = SDRi of an all-zero estimate (-SDR(mixture, target)); silent = estimates "
                     f">= {report['silent_below_db']:.0f} dB below the mixture")
    a = report["absent_queries"]
    if a.get("n"):
        lines.append(f"absent-class queries: n={a['n']} Silence-SDR mean {a['silence_sdr']:.1f} dB, "
                     f"median {a['median_silence_sdr']:.1f} dB, Silence-SISDR {a['silence_sisdr']:.1f} dB")
    return "\n".join(lines)
