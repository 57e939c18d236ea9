"""Config section `separator`: the query-conditioned mask separator, its training and inference.

Defaults are the embedded demo: the CPU-friendly `tiny` preset at 16 kHz with the hashed text encoder. The
training hyper-parameters follow ClearSep App. A.1 (AdamW 0.9/0.999, wd 1e-2, lr 2e-4 decayed by 0.3 on a
5-epoch plateau down to 5e-6, loss -0.9 SDR - 0.1 SI-SDR) except batch size and epoch length, which are scaled to
a 2-core machine. The budget is `max_steps` optimiser steps of a global batch of `batch_size` (split across the
training workers); an "epoch" is the validation / checkpoint interval of `steps_per_epoch` steps.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from storage.configio import Section


class SeparatorConfig(Section):
    """Separator presets and training."""

    preset: Literal["tiny", "clapsep"] = "tiny"
    sample_rate: int = Field(16000, gt=0, description="model rate; 32000 for clapsep")
    segment_s: float = Field(4.0, gt=0.0, description="training crop and inference window length")
    text_encoder: str = Field("hash", description="'hash[:dim[:seed]]' or 'clap:<checkpoint>'")
    # tiny architecture
    n_fft: int = Field(512, gt=0)
    hop: int = Field(256, gt=0)
    width: int = Field(256, gt=0, description="tiny: channels of the conv/GRU trunk; clapsep: decoder width")
    gru_stride: int = Field(1, ge=1, description="tiny: run the BiGRU on frames pooled by this factor (2: ~25% more "
                            "training steps per minute at the same bench quality; checkpoints without it load as 1)")
    gru_layers: int = Field(1, ge=1, description="tiny: stacked BiGRU layers")
    presence_gate: bool = Field(True, description="predict target presence from query+mixture and scale the mask by it")
    # clapsep encoder (HTSAT-tiny as in CLAP 630k checkpoints; reduce for CPU tests)
    clap_checkpoint: str | None = Field(None, description="local LAION-CLAP 630k-best.pt for the clapsep encoder")
    clap_embed_dim: int = Field(96, gt=0)
    clap_depths: list[int] = Field(default_factory=lambda: [2, 2, 6, 2])
    clap_heads: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    lora_rank: int = Field(16, gt=0)
    masknet_layers: int = Field(3, gt=0)
    # training
    batch_size: int = Field(16, gt=0, description="global batch per optimiser step (divided among the training workers)")
    lr: float = Field(2e-3, gt=0.0)
    min_lr: float = Field(5e-6, gt=0.0)
    warmup_steps: int = Field(0, ge=0, description="cosine schedule: the LR rises linearly to `lr` over the first N "
                              "steps (fine-tunes: a fresh AdamW at the peak LR kicks a trained model hard)")
    weight_decay: float = 1e-2
    lr_schedule: Literal["plateau", "cosine"] = Field("plateau", description="plateau: ClearSep's x plateau_factor on a "
                                                      "val-loss plateau; cosine: lr -> min_lr over max_steps")
    plateau_factor: float = Field(0.3, gt=0.0, lt=1.0)
    plateau_patience: int = Field(5, ge=0)
    grad_clip: float = Field(5.0, gt=0.0)
    sdr_weight: float = Field(0.9, ge=0.0, le=1.0, description="lambda in -lambda SDR - (1-lambda) SI-SDR")
    silent_floor_db: float = Field(-30.0, description="silent-target loss floor: output energy below mixture energy + this stops counting")
    silent_weight: float = Field(0.3, ge=0.0, description="weight of the silent-target loss relative to -SDR on present targets")
    gate_loss_weight: float = Field(1.0, ge=0.0)
    silence_aug_prob: float = Field(0.2, ge=0.0, le=1.0, description="trainer-side silence augmentation (paper: 0.05)")
    query_mix: dict[str, float] = Field(default_factory=lambda: {"pos": 0.25, "neg": 0.25, "posneg": 0.5},
                                        description="resampling of the query side when the sample allows it; {} = as the shards specify")
    query_forms: bool = Field(True, description="ask each label-derived query side in a drawn written form (phrase, bare "
                              "label in any case, templates, AudioSet name: models/labels.py); false = as stored")
    max_steps: int = Field(1000, gt=0, description="training budget in optimiser steps (a fine-tune counts its own)")
    steps_per_epoch: int = Field(50, gt=0, description="validation and checkpoint interval in steps")
    val_max: int = Field(64, gt=0, description="validation samples used per epoch")
    workers: int = Field(0, ge=0, description="DataLoader worker processes that decode and crop batches ahead (0 = inline)")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1'")
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on CPU)")
    threads: int = Field(1, ge=0, description="torch.set_num_threads on CPU (0 = leave torch default); see docs/perf/separator.md")
    seed: int = 0
    # inference
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="window overlap fraction for long inputs (crossfaded)")
    infer_batch: int = Field(16, gt=0)
    gate_threshold: float = Field(0.5, ge=0.0, le=1.0, description="outputs whose presence gate is below this are zeroed; 0 = never")

    @model_validator(mode="after")
    def _check(self) -> "SeparatorConfig":
        if self.hop > self.n_fft:
            raise ValueError(f"hop {self.hop} must not exceed n_fft {self.n_fft}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} above lr {self.lr}")
        if self.warmup_steps and self.lr_schedule != "cosine":
            raise ValueError(f"warmup_steps {self.warmup_steps} needs lr_schedule: cosine (got {self.lr_schedule!r})")
        unknown = set(self.query_mix) - {"pos", "neg", "posneg"}
        if unknown:
            raise ValueError(f"query_mix keys must be pos/neg/posneg, got {sorted(unknown)}")
        return self
