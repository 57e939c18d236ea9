"""Preset name -> model: the one place that knows which class implements which preset."""
from __future__ import annotations

from typing import Any

from torch import nn

from models.separator.config import SeparatorConfig


def model_hparams(cfg: SeparatorConfig, query_dim: int) -> dict[str, Any]:
    """The constructor arguments recorded in checkpoints (so loading never depends on the current config)."""
    if cfg.preset == "tiny":
        return dict(query_dim=query_dim, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop=cfg.hop, width=cfg.width,
                    presence_gate=cfg.presence_gate, gru_stride=cfg.gru_stride, gru_layers=cfg.gru_layers)
    if cfg.preset == "clapsep":
        from models.separator.clapsep import ClapSepConfig

        if len(cfg.clap_depths) != len(cfg.clap_heads):
            raise ValueError("separator.clap_depths and separator.clap_heads must have the same length")
        return ClapSepConfig(query_dim=query_dim, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop=cfg.hop,
                             embed_dim=cfg.clap_embed_dim, depths=list(cfg.clap_depths), num_heads=list(cfg.clap_heads),
                             lora_rank=cfg.lora_rank, width=cfg.width, masknet_layers=cfg.masknet_layers,
                             presence_gate=cfg.presence_gate, clap_checkpoint=cfg.clap_checkpoint).as_dict()
    raise ValueError(f"unknown separator preset {cfg.preset!r}")


def build_model(preset: str, hparams: dict[str, Any]) -> nn.Module:
    if preset == "tiny":
        from models.separator.tiny import TinySeparator

        return TinySeparator(**hparams)
    if preset == "clapsep":
        from models.separator.clapsep import ClapSeparator, ClapSepConfig

        return ClapSeparator(ClapSepConfig(**hparams))
    raise ValueError(f"unknown separator preset {preset!r}; known: tiny, clapsep")
