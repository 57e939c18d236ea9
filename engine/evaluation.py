"""Evaluate a separator checkpoint for the run report: held-out synthetic test tuples and held-out natural
scenes against their audit stems (models/separator/evaluate.py does the metric work).

Natural-scene queries use the same wording the engine trains and pseudo-labels with (the label phrase as the
positive query, the scene's other labels as negatives), so the comparison measures the separator, not a
prompt-wording mismatch.
"""
from __future__ import annotations

from itertools import islice
from typing import Any, Iterator

import numpy as np

from engine.data_steps import audit_stems, scene_rows
from pipelines.mixing.prompts import phrase_for, query_text
from storage.audio import AudioConfig, load_audio


def natural_items(scenes_manifest: str, audit_manifest: str, split: str, sample_rate: int) -> Iterator[Any]:
    from models.separator.evaluate import TestItem

    stems = audit_stems(audit_manifest)
    acfg = AudioConfig(sample_rate=sample_rate, allow_silent=True, min_duration_s=0.0)
    for row in scene_rows(scenes_manifest, [split]):
        labels = list(dict.fromkeys(row["event_labels"]))
        mix = load_audio(row["path"], acfg)
        for label in labels:
            path = stems.get(row["clip_id"], {}).get(label)
            if path is None:
                continue
            target = load_audio(path, acfg)
            n = min(len(mix), len(target))
            others = [o for o in labels if o != label]
            yield TestItem(f"{row['clip_id']}/{label}", mix[:n], target[:n], phrase_for(label), query_text(others),
                           label, set(labels), False)


def evaluate_checkpoint(checkpoint: str, cfg: Any, corpus: dict[str, Any], synthetic_test_dir: str) -> dict[str, Any]:
    """{sdri_db, si_sdri_db, silence_sdr_db, natural_sdri_db, natural_si_sdri_db, ...} for one checkpoint."""
    from models.separator.evaluate import evaluate, items_from_shards
    from models.separator.infer import Separator

    sep = Separator.load(checkpoint, cfg.engine.device)
    sr = sep.sample_rate
    syn = evaluate(sep, islice(items_from_shards([synthetic_test_dir], sr), cfg.engine.eval_max_items), absent_queries=True,
                   seed=cfg.run.seed)
    nat = evaluate(sep, natural_items(corpus["scenes"], corpus["audit"], cfg.engine.natural_eval_split, sr), absent_queries=False,
                   seed=cfg.run.seed)

    def num(x: Any) -> float | None:
        return None if x is None or not np.isfinite(x) else round(float(x), 3)

    return {
        "sdri_db": num(syn["overall"].get("sdri")),
        "si_sdri_db": num(syn["overall"].get("si_sdri")),
        "silence_sdr_db": num(syn["absent_queries"].get("median_silence_sdr")),
        "silence_sdr_mean_db": num(syn["absent_queries"].get("silence_sdr")),
        "natural_sdri_db": num(nat["overall"].get("sdri")),
        "natural_si_sdri_db": num(nat["overall"].get("si_sdri")),
        "natural_items": int(nat["overall"].get("n", 0)),
        "synthetic_items": int(syn["overall"].get("n", 0)),
        "natural_per_class": {c: num(v.get("sdri")) for c, v in nat["per_class"].items()},
    }
