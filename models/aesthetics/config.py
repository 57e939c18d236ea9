"""Config section: production-complexity (PC) scorer."""
from __future__ import annotations

from typing import Literal

from storage.configio import Section


class PCConfig(Section):
    """PC scorer: `mini` (in-project proxy estimator) or `audiobox` (audiobox-aesthetics checkpoint, local file)."""

    backend: Literal["mini", "audiobox"] = "mini"
    checkpoint: str = ""
    # audiobox only: allow full unpickling (weights_only=False) for a checkpoint whose metadata holds non-tensor
    # objects; only for a file from a trusted source (the official release). Ours always load weights-only.
    trust_checkpoint: bool = False
    device: str = "auto"
    batch_size: int = 16
    # model (mini)
    sample_rate: int = 16000
    n_mels: int = 64
    hop: int = 320
    channels: int = 96
    # training (mini)
    seed: int = 0
    clip_seconds: float = 3.0
    train_batch: int = 24
    lr: float = 2e-3
    steps: int = 400
    max_sources: int = 4
    background_prob: float = 0.5
    snr_db: tuple[float, float] = (-5.0, 10.0)
    eval_mixtures: int = 400
    max_clips: int = 600
