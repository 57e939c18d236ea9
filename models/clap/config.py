"""Config section: CLAP text-audio agreement scorers (`laion`, `hf`, `mini`) and mini-CLAP training."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage.configio import Section


class MiniClapTrainConfig(Section):
    """Architecture and training of the in-project contrastive audio-text model (`stemforge train clap`).

    Defaults train on the demo corpus in a few minutes on 2 CPU cores. The margin loss pushes matching pairs above
    `pos_margin` and non-matching pairs (other classes, silence) below `neg_margin`, so the SAM Audio thresholds
    (CLAP(text, target) > 0.35, CLAP(text, residual) < 0.0) separate the two populations.
    """

    sample_rate: int = Field(16000, ge=8000)
    n_mels: int = Field(64, ge=16)
    n_fft: int = 512
    hop_length: int = 320
    embed_dim: int = Field(512, ge=8)
    channels: list[int] = Field(default_factory=lambda: [128, 128, 256, 256])
    text_hidden: int = Field(256, ge=8)
    text_buckets: int = Field(4096, ge=16, description="hash buckets for unknown words and char trigrams")
    crop_seconds: float = Field(2.0, gt=0.0)
    steps: int = Field(400, ge=1)
    batch_size: int = Field(32, ge=4)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = 1e-4
    mix_prob: float = Field(0.4, ge=0.0, le=1.0, description="fraction of items that are 2-3 class mixtures")
    silence_prob: float = Field(0.08, ge=0.0, le=1.0, description="fraction of label-free items (near-silence or ambient noise)")
    background_prob: float = Field(0.3, ge=0.0, le=1.0, description="fraction of labelled items with a quiet noise bed added")
    gain_db: list[float] = Field(default_factory=lambda: [-20.0, 6.0])
    pos_margin: float = 0.5
    neg_margin: float = -0.2
    margin_weight: float = 1.0
    init_temperature: float = 0.07
    seed: int | None = Field(None, description="training seed (default: run.seed)")
    threads: int = Field(1, ge=1, description="torch threads; 1 is fastest on a shared 2-core machine")


class ClapConfig(Section):
    """Which CLAP backend scores text-audio agreement, from which checkpoint, on which device."""

    backend: Literal["mini", "laion", "hf"] = "mini"
    checkpoint: str | None = Field(None, description="mini: .pt from `stemforge train clap`; laion: e.g. 630k-best.pt; hf: model folder")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto'")
    batch_size: int = Field(16, ge=1)
    laion_amodel: Literal["HTSAT-tiny", "HTSAT-base"] = "HTSAT-tiny"
    laion_enable_fusion: bool = False
    mini: MiniClapTrainConfig = Field(default_factory=MiniClapTrainConfig)
