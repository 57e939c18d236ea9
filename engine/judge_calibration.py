"""judge_K: the run's judge re-calibrated on separator K's own outputs before it scores separator K's pseudo-labels.

Why per iteration (issue W2 3/5 item 7): the judge rates a separator's errors, and each retrain changes which errors
the separator makes; ratings learnt from hand-made degradations (the scorer's proxy task) barely track the true
quality of real separator outputs. `models.judge.separator_ratings` rates the separator's outputs where the truth is
known (the mapping from truth to the four axes is documented there: a PROXY, not human ratings) and fine-tunes the
judge on them. Each iteration starts again from the run's judge (`scorer_judge`), so judge_K depends on separator K
alone, not on the chain of earlier calibrations.

Which items have known truth: the synthetic `val` store (held out from every separator's training), the `train`
store (up to `engine.judge_calibration.train_tuples`, the demo's whole store by default: on the demo more tuples
carried best to the natural scenes, docs/perf/judge_pc.md), and with `natural_val` the natural scenes of the stop rule's split
(`run.stop_split`) where stems exist - never the test split, which only reports. The synthetic `test` store is scored
for the record (held-out correlations in the marker), never trained on.

Which steps use judge_K: filter_K (the judge's scores and, with `filters.judge_enabled`, its gate: on by default,
`filters.judge_min` 3.0 = a predicted track SDR of 2.5 dB) and tiers_K (the lineage of the kept tracks). judge_K
reads the other labels of each mixture beside the target (`models.judge.prompt`), as filter_K hands them over. The
evaluations keep the run's judge, so their label-free judge means compare across iterations. Under Ray the flow
starts judge_K as soon as separator K exists, beside the evaluations (flows/cycle.py `_start_judge`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.workspace import Workspace


def natural_truth_items(scenes_manifest: str, audit_manifest: str | None, split: str,
                        sample_rate: int) -> list[dict[str, Any]]:
    """The natural scenes of `split` with stems as truth-known items in the shard-reader format (`calibrate_judge`'s
    `extra_samples`): one per (scene, stemmed label), worded as the run's evaluation words its queries."""
    from engine.evaluation import natural_items

    if not audit_manifest:
        return []
    out = []
    for it in natural_items(scenes_manifest, audit_manifest, split, sample_rate):
        meta = {"positive_text": it.positive, "negative_text": it.negative,
                "query_mode": "posneg" if it.negative else "pos", "target_labels": list(it.classes),
                "residual_labels": sorted(it.present - set(it.classes))}
        out.append({"__key__": it.key, "mix": it.mix, "target": it.target,
                    "residual": (it.mix - it.target).astype(np.float32), "json": meta})
    return out


def step_calibrate_judge(ws: Workspace, cfg: Any, k: int, natural: dict[str, Any], synthetic_dirs: dict[str, str],
                         separator: dict[str, Any], judge: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the run's judge (`judge`, the scorer_judge output) on separator-proxy ratings of `separator`'s
    outputs; `natural` is the run's natural evaluation set (`scenes`, `audit`). Writes `judge_K/judge.pt`."""
    from models.judge.separator_ratings import calibrate_judge

    jc = cfg.engine.judge_calibration
    stores = [synthetic_dirs["val"]] + ([synthetic_dirs["train"]] if jc.train_tuples != 0 else [])
    extra = natural_truth_items(natural["scenes"], natural.get("audit"), cfg.run.stop_split,
                                cfg.audio.sample_rate) if jc.natural_val else []
    out = calibrate_judge(judge["checkpoint"], separator["checkpoint"], stores, cfg.judge, jc.steps,
                          cfg.run.seed + 104729 * (k + 1), ws.path(f"judge_{k}", "judge.pt"),
                          heldout_dirs=[synthetic_dirs["test"]], max_tuples=jc.train_tuples or None, clip_s=jc.clip_s,
                          extra_samples=extra)
    return {"checkpoint": out["checkpoint"], "checkpoint_hash": out["checkpoint_hash"], "targets": out["targets"],
            "text_form": out["text_form"],
            "init": judge["checkpoint_hash"], "separator": separator["checkpoint_hash"], "steps": out["steps"],
            "tuples": out["tuples"], "natural_items": len(extra), "examples": out["examples"],
            "seconds": out["seconds"], "heldout": out["heldout"], "test": out.get("test")}
