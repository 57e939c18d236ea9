"""Ground-truth quality of candidates where audit stems exist (the demo corpus): evaluation only.

`true_sdr_db` = SDR(target, audit stem of the same scene and label) lets the sweep report tell which filters
keep good tracks and drop bad ones. Training never reads audit stems; this stage only adds a column to the
candidate table, and is simply left out of the pipeline for corpora without audit stems.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from models import metrics
from pipelines.stage import BaseStage, Batch, Resources, batch_len
from storage.audio import AudioConfig, load_audio


class AuditTruth(BaseStage):
    """Adds `true_sdr_db` (NaN when the scene has no audit stem for the label)."""

    name = "audit_truth"
    resources = Resources(cpus=0.5, gpus=0, batch_size=64)

    def __init__(self, stems: Mapping[str, Mapping[str, str]], audio_cfg: AudioConfig) -> None:
        super().__init__()
        self.stems = stems
        self.audio_cfg = audio_cfg.model_copy(update={"allow_silent": True, "min_duration_s": 0.0})

    def __call__(self, batch: Batch) -> Batch:
        n = batch_len(batch)
        out = np.full(n, np.nan)
        for i in range(n):
            path = self.stems.get(batch["scene_id"][i], {}).get(batch["label"][i])
            if path is None:
                continue
            ref = load_audio(path, self.audio_cfg)
            est = np.asarray(batch["target"][i], dtype=np.float32)
            m = min(len(ref), len(est))
            if m and np.any(ref[:m]):
                out[i] = float(metrics.sdr(est[:m], ref[:m]))
        return {**batch, "true_sdr_db": out}


class DropColumns(BaseStage):
    """Drops large columns no later step needs (the scene audio is reloaded from `scene_path` when required)."""

    name = "drop_columns"
    resources = Resources(cpus=0.1, gpus=0, batch_size=1024)

    def __init__(self, columns: tuple[str, ...]) -> None:
        super().__init__()
        self.columns = columns

    def __call__(self, batch: Batch) -> Batch:
        return {k: v for k, v in batch.items() if k not in self.columns}
