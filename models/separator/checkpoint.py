"""Separator checkpoints: weights plus everything needed to trust and reproduce them.

A checkpoint records the preset and its constructor arguments, the training config, the text encoder spec, the
training-data lineage (hashes of the shard indexes / stream descriptions), validation metrics and the code version.
`load_checkpoint` validates all of it and names the file in every error, because a checkpoint from another preset
or a truncated download must fail at load time, not as a shape error deep inside inference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from storage.atomic import atomic_path
from storage.version import code_version
from storage.errors import reconstructible

FORMAT = "stemforge-separator/1"
REQUIRED = ("format", "preset", "hparams", "state_dict", "text_encoder", "config", "lineage", "metrics", "code_version")


@reconstructible
class CheckpointError(ValueError):
    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


@dataclass
class Checkpoint:
    preset: str
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    text_encoder: str
    config: dict[str, Any]
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    code_version: str = field(default_factory=code_version)
    train_state: dict[str, Any] | None = None  # optimiser/scheduler/progress, only in `last` checkpoints

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "preset": self.preset, "hparams": self.hparams, "state_dict": self.state_dict,
                "text_encoder": self.text_encoder, "config": self.config, "lineage": self.lineage,
                "metrics": self.metrics, "code_version": self.code_version, "train_state": self.train_state,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers on CPU. Frozen pretrained encoder weights are included too: a checkpoint must
    reproduce its outputs without the original CLAP file being around."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt.to_dict(), tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "separator checkpoint does not exist")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated / not a torch file
        raise CheckpointError(path, f"not a readable separator checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(path, f"format {found!r} is not {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(path, f"missing fields {missing}")
    if raw["preset"] not in ("tiny", "clapsep"):
        raise CheckpointError(path, f"unknown preset {raw['preset']!r}")
    return Checkpoint(preset=raw["preset"], hparams=dict(raw["hparams"]), state_dict=raw["state_dict"],
                      text_encoder=raw["text_encoder"], config=dict(raw["config"]), lineage=dict(raw["lineage"]),
                      metrics=dict(raw["metrics"]), code_version=str(raw["code_version"]),
                      train_state=raw.get("train_state"))


def model_from_checkpoint(ckpt: Checkpoint, path: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild the model and load its weights strictly (a mismatch names the offending keys)."""
    from models.separator.presets import build_model

    model = build_model(ckpt.preset, ckpt.hparams)
    result = model.load_state_dict(ckpt.state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(path, f"weights do not match preset {ckpt.preset!r}: missing {result.missing_keys[:5]}, "
                                    f"unexpected {result.unexpected_keys[:5]}")
    return model
