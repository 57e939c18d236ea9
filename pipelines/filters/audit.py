"""Ground-truth quality of candidates where audit stems exist (the demo corpus): evaluation only.

`true_sdr_db` = SDR(target, audit stem of the same scene and label) lets the sweep report tell which filters
keep good tracks and drop bad ones. Training never reads audit stems; this stage only adds a column to the
candidate table, and is simply left out of the pipeline for corpora without audit stems.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models import metrics
from pipelines.filters.scoring import section_dict
from pipelines.stage import BaseStage, Batch, StageContext, batch_len
from storage.audio import AudioConfig, load_audio


class AuditTruth(BaseStage):
    """Adds `true_sdr_db` (NaN when the scene has no audit stem for the label).

    Built from the audit manifest's path (read once per worker in `setup`), so its spec stays small.
    """

    name = "audit_truth"
    inputs = ("scene_id", "label", "target")
    outputs = ("true_sdr_db",)

    def __init__(self, audit_manifest: str | None, audio: AudioConfig | dict[str, Any]) -> None:
        super().__init__()
        self.audit_manifest = None if audit_manifest is None else str(audit_manifest)  # None: a corpus without stems
        self.audio_cfg = AudioConfig.model_validate(section_dict(audio)).model_copy(update={"allow_silent": True, "min_duration_s": 0.0})
        self.stems: dict[str, dict[str, str]] | None = None

    def setup(self, ctx: StageContext) -> None:
        if self.stems is None:
            from storage.manifests import iter_rows

            stems: dict[str, dict[str, str]] = {}
            for r in iter_rows(self.audit_manifest, expect="audit_stem") if self.audit_manifest else ():
                stems.setdefault(r["scene_id"], {})[r["label"]] = r["path"]
            self.stems = stems

    def __call__(self, batch: Batch) -> Batch:
        if self.stems is None:
            self.setup(StageContext())
        assert self.stems is not None
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

