"""One evaluation of a separator, shared by the run report and `stemforge evaluate`: both call
`evaluate_separator` (the run through `evaluate_checkpoint`), so they give the same numbers on the same checkpoint
and test data. The metric work and the figures beside SDRi (all-zero-estimate baseline, silent share, per-class
rows by class label, 95 % bootstrap intervals) are in models/separator/evaluate.py.

Query policy (the wording the engine trains and pseudo-labels with, so the figure measures the separator, not a
prompt-wording mismatch; the same for both callers):
- Natural scenes (a `natural_scene` manifest with its `audit_stem` ground truth): every event label of a scene of
  the evaluated split that has an audit stem is one present-target query: positive = the label's phrase
  (`pipelines.mixing.prompts.phrase_for`), negative = the phrases of the scene's *other* event labels
  (`query_text`; none when the scene has one label). The ambience stem ('background') is not an event label and is
  never queried. No absent-class queries on natural scenes: Silence-SDR comes from the synthetic set, where
  absence is exact by construction.
- Synthetic shard tuples: each tuple's own stored query (positive / negative text in its query mode);
  `silent_target` tuples are absent-class queries, and every present tuple is queried once more with a class absent
  from its mixture, worded by `phrase_for` as the training's silence augmentation words it.
- Labels: matched and de-duplicated by `models.labels.slug` (scene labels against audit-stem labels), and every
  text goes through the `Separator`'s `canonical_query` before encoding, as in `stemforge separate` and
  pseudo-labelling: one rule for every entry point (models/labels.py).
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq

from engine.data_steps import audit_stems, scene_rows
from models.labels import slug, unique_labels
from models.separator.evaluate import TestItem, evaluate, format_table, items_from_shards
from pipelines.mixing.prompts import phrase_for, query_text
from storage.audio import AudioConfig, load_audio

QUERY_POLICY = ("natural: positive = phrase_for(label), negative = phrases of the scene's other labels; "
                "synthetic: each tuple's stored query, absent-class queries worded by phrase_for; "
                "label-like texts encoded as their label's phrase (models.labels.canonical_query)")

# the figures of `evaluate_checkpoint` that every iteration of the run's report.json carries
REPORT_KEYS = ("sdri_db", "si_sdri_db", "sdri_ci95_db", "silent_baseline_sdri_db", "silent_share", "silence_sdr_db",
               "natural_sdri_db", "natural_si_sdri_db", "natural_sdri_ci95_db", "natural_silent_baseline_sdri_db",
               "natural_silent_share", "natural_items", "natural_per_class", "synthetic_per_class")


def natural_manifests(path: str | Path) -> tuple[str, str]:
    """(scene manifest, audit manifest) from a corpus dir (holding manifests/scenes) or a scene manifest dir; the
    audit manifest is its sibling `audit/`. Raises FileNotFoundError naming what was expected where: a corpus dir
    without scenes (a sources-only import), a manifest that is not a scene manifest, scenes without audit stems."""
    from storage.manifests import schema_name

    p = Path(path)
    if (p / "manifests").is_dir():
        scenes = p / "manifests" / "scenes"
        if not scenes.is_dir():
            found = sorted(x.name for x in (p / "manifests").iterdir() if x.is_dir())
            hint = (" (a sources-only import: clean clips have no scenes to evaluate on; render test tuples from them "
                    "with `stemforge mix --split test` and pass that shard dir to --test)") if "sources" in found else ""
            raise FileNotFoundError(f"{p}: no natural-scene manifest: expected {scenes}/ (written by `stemforge corpus "
                                    f"demo`, or by `corpus import` for scenes), found manifests/ with "
                                    f"{', '.join(found) or 'nothing'}{hint}")
    else:
        scenes = p
        parts = sorted(p.glob("part-*.parquet"))
        kind = schema_name(pq.read_schema(parts[0])) if parts else None
        if kind != "natural_scene":
            raise FileNotFoundError(f"{p}: expected a natural-scene manifest (or a corpus dir holding "
                                    f"manifests/scenes/), found a {kind or 'unnamed'!s} manifest")
    audit = scenes.parent / "audit"
    if not audit.is_dir():
        raise FileNotFoundError(f"{scenes}: no ground truth for these scenes: expected their audit-stem manifest at "
                                f"{audit}/ (one row per scene and label with the stem file; `corpus demo` writes it, "
                                f"an import of mixtures with their stems does too)")
    return str(scenes), str(audit)


def natural_items(scenes_manifest: str, audit_manifest: str, split: str, sample_rate: int) -> Iterator[TestItem]:
    """Present-target queries of the natural scenes of `split`, worded by the module's query policy.

    Labels are matched by slug (`models.labels.slug`): a scene tagged `alarm clock` finds its `alarm_clock` stem,
    and one label written twice is one query. A stem listed in the audit manifest whose file is missing is an
    error naming the file, the scene and the manifest, raised before any separation."""
    stems = {scene: {slug(lab): p for lab, p in by_label.items()} for scene, by_label in audit_stems(audit_manifest).items()}
    rows = scene_rows(scenes_manifest, [split])
    for row in rows:
        for label, path in stems.get(row["clip_id"], {}).items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: stem file of scene {row['clip_id']!r}, label {label!r} (listed in "
                                        f"{audit_manifest}) does not exist")
    acfg = AudioConfig(sample_rate=sample_rate, allow_silent=True, min_duration_s=0.0)
    for row in rows:
        labels = unique_labels(row["event_labels"])
        mix = load_audio(row["path"], acfg)
        for label in labels:
            path = stems.get(row["clip_id"], {}).get(slug(label))
            if path is None:
                continue
            target = load_audio(path, acfg)
            n = min(len(mix), len(target))
            others = [o for o in labels if o != label]
            yield TestItem(f"{row['clip_id']}/{label}", mix[:n], target[:n], phrase_for(label), query_text(others),
                           (label,), set(labels), False)


def evaluate_separator(sep: Any, synthetic_dirs: Sequence[str | Path], natural: Sequence[tuple[str, str]], split: str,
                       seed: int, max_synthetic_items: int | None = None, absent_queries: bool = True) -> dict[str, Any]:
    """{"synthetic": report | None, "natural": report | None} for a loaded `Separator` (a set without items is None).

    `natural`: (scene manifest, audit manifest) pairs, evaluated on `split`; `max_synthetic_items` caps the shard
    tuples (in shard order); `absent_queries` adds the absent-class queries to the synthetic set."""
    sr = sep.sample_rate
    out: dict[str, Any] = {"query_policy": QUERY_POLICY, "split": split, "synthetic": None, "natural": None}
    syn = list(islice(items_from_shards(list(synthetic_dirs), sr), max_synthetic_items))
    if syn:
        out["synthetic"] = evaluate(sep, syn, absent_queries=absent_queries, seed=seed, phrase=phrase_for)
    nat = [it for scenes, audit in natural for it in natural_items(scenes, audit, split, sr)]
    if nat:
        out["natural"] = evaluate(sep, nat, absent_queries=False, seed=seed, phrase=phrase_for)
    if out["synthetic"] is None and out["natural"] is None:
        raise ValueError(f"no test items: no shard samples and no natural scenes of split {split!r} with audit stems")
    return out


def format_report(result: dict[str, Any]) -> str:
    """The tables of both sets, headed by what was evaluated."""
    parts = []
    if result.get("synthetic"):
        parts.append(f"== synthetic tuples ==\n{format_table(result['synthetic'])}")
    if result.get("natural"):
        parts.append(f"== natural scenes, split {result['split']} (vs audit stems) ==\n{format_table(result['natural'])}")
    return "\n\n".join(parts + [f"queries: {result['query_policy']}"])


def _num(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 3)


def _ci(v: list[float] | None) -> list[float] | None:
    return None if v is None else [_num(v[0]), _num(v[1])]


def _per_class(rep: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if rep is None:
        return {}
    return {c: {"n": int(r["n"]), "sdri_db": _num(r["sdri"]), "si_sdri_db": _num(r["si_sdri"]),
                "silent_baseline_sdri_db": _num(r["silent_baseline_sdri"]), "silent_share": _num(r["silent_share"])}
            for c, r in rep["per_class"].items()}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The flat, rounded figures of an `evaluate_separator` result that the run's report carries."""
    syn, nat = result.get("synthetic"), result.get("natural")
    so = syn["overall"] if syn else {}
    sa = syn["absent_queries"] if syn else {}
    no = nat["overall"] if nat else {}
    return {
        "sdri_db": _num(so.get("sdri")),
        "si_sdri_db": _num(so.get("si_sdri")),
        "sdri_ci95_db": _ci(so.get("sdri_ci95")),
        "silent_baseline_sdri_db": _num(so.get("silent_baseline_sdri")),
        "silent_share": _num(so.get("silent_share")),
        "silence_sdr_db": _num(sa.get("median_silence_sdr")),
        "silence_sdr_mean_db": _num(sa.get("silence_sdr")),
        "natural_sdri_db": _num(no.get("sdri")),
        "natural_si_sdri_db": _num(no.get("si_sdri")),
        "natural_sdri_ci95_db": _ci(no.get("sdri_ci95")),
        "natural_si_sdri_ci95_db": _ci(no.get("si_sdri_ci95")),
        "natural_silent_baseline_sdri_db": _num(no.get("silent_baseline_sdri")),
        "natural_silent_share": _num(no.get("silent_share")),
        "natural_items": int(no.get("n", 0)),
        "synthetic_items": int(so.get("n", 0)),
        "natural_per_class": _per_class(nat),
        "synthetic_per_class": _per_class(syn),
        # per-item natural SDRi: paired comparisons between checkpoints (models.separator.evaluate.paired_ci)
        "natural_item_sdri": {r["key"]: r["sdri"] for r in nat["items"]} if nat else {},
    }


def evaluate_checkpoint(checkpoint: str, cfg: Any, corpus: dict[str, Any], synthetic_test_dir: str | None,
                        split: str | None = None) -> dict[str, Any]:
    """`summarize(evaluate_separator(...))` for one checkpoint on the run's held-out synthetic tuples (at most
    `engine.eval_max_items`; none when `synthetic_test_dir` is None) and natural scenes of `split` (default
    `engine.natural_eval_split`)."""
    from models.separator.infer import Separator

    sep = Separator.load(checkpoint, cfg.engine.device)
    natural = [(corpus["scenes"], corpus["audit"])] if corpus.get("scenes") and corpus.get("audit") else []  # no stems: none
    result = evaluate_separator(sep, [synthetic_test_dir] if synthetic_test_dir else [], natural,
                                split or cfg.engine.natural_eval_split, seed=cfg.run.seed,
                                max_synthetic_items=cfg.engine.eval_max_items, absent_queries=True)
    return summarize(result)
