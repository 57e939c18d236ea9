"""Config section: the SAJ-style judge (which backend, where its checkpoint is, how the mini judge trains)."""
from __future__ import annotations

from typing import Literal

from storage.configio import Section


class JudgeConfig(Section):
    """SAJ-style judge: `mini` is the in-project model, `sam` wraps Meta's released judge when installed."""

    backend: Literal["mini", "sam"] = "mini"
    checkpoint: str = ""  # mini: our .pt file; sam: a local folder with the released checkpoint
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 16
    # model size (mini)
    sample_rate: int = 16000
    n_mels: int = 64
    hop: int = 320
    dim: int = 64
    heads: int = 4
    layers: int = 2
    text_vocab: int = 4096
    max_text_tokens: int = 16
    # training (mini)
    seed: int = 0
    clip_seconds: float = 2.0
    train_batch: int = 24
    lr: float = 2e-3
    pretrain_steps: int = 100
    finetune_steps: int = 500
    min_sources: int = 2
    max_sources: int = 4
    snr_db: tuple[float, float] = (-5.0, 10.0)
    eval_tuples: int = 300
    max_clips: int = 600
