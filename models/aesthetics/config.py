"""Config section: production-complexity (PC) scorer."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage.configio import Section


class PCConfig(Section):
    """PC scorer: `mini` (in-project proxy estimator) or `audiobox` (audiobox-aesthetics checkpoint, local file)."""

    backend: Literal["mini", "audiobox"] = "mini"
    checkpoint: str = ""
    # audiobox only: allow full unpickling (weights_only=False) for a checkpoint whose metadata holds non-tensor
    # objects; only for a file from a trusted source (the official release). Ours always load weights-only.
    trust_checkpoint: bool = False
    device: str = "auto"
    batch_size: int = Field(16, ge=1)
    # model (mini)
    sample_rate: int = 16000
    n_mels: int = Field(64, ge=1)
    hop: int = Field(320, ge=1)
    channels: int = Field(96, ge=1)
    # training (mini)
    seed: int = 0
    clip_seconds: float = Field(3.0, gt=0.2)
    train_batch: int = Field(24, ge=1)
    lr: float = 2e-3
    steps: int = Field(400, ge=0)
    max_sources: int = Field(4, ge=1)
    background_prob: float = Field(0.5, ge=0.0, le=1.0)
    snr_db: tuple[float, float] = (-5.0, 10.0)
    eval_mixtures: int = Field(400, ge=1)
    max_clips: int = Field(600, ge=1)
