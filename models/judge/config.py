"""Config section: the SAJ-style judge (which backend, where its checkpoint is, how the mini judge trains)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from storage.configio import Section


class JudgeConfig(Section):
    """SAJ-style judge: `mini` is the in-project model, `sam` wraps Meta's released judge when installed."""

    backend: Literal["mini", "sam"] = "mini"
    checkpoint: str = ""  # mini: our .pt file; sam: a local folder with the released checkpoint
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = Field(16, ge=1)
    # model size (mini)
    sample_rate: int = 16000
    n_mels: int = Field(64, ge=1)
    hop: int = Field(320, ge=1)
    dim: int = Field(64, ge=1)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    text_vocab: int = Field(4096, ge=2)
    max_text_tokens: int = Field(16, ge=1)
    # training (mini)
    seed: int = 0
    clip_seconds: float = Field(2.0, gt=0.2)
    train_batch: int = Field(24, ge=1)
    lr: float = 2e-3
    pretrain_steps: int = Field(100, ge=0)
    finetune_steps: int = Field(1000, ge=0)
    min_sources: int = Field(2, ge=2)  # the proxy task needs another source of the same mixture
    max_sources: int = Field(4, ge=2)
    snr_db: tuple[float, float] = (-5.0, 10.0)
    eval_tuples: int = Field(300, ge=1)
    max_clips: int = Field(600, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "JudgeConfig":
        if self.max_sources < self.min_sources:
            raise ValueError(f"max_sources ({self.max_sources}) < min_sources ({self.min_sources})")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be [low, high], got {list(self.snr_db)}")
        return self
