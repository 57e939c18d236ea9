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

from models.checkpoint_io import CheckpointError, load_weights, read_checkpoint
from storage.atomic import atomic_open
from storage.version import code_version

FORMAT = "stemforge-separator/1"
REQUIRED = ("format", "preset", "hparams", "state_dict", "text_encoder", "config", "lineage", "metrics", "code_version")


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
    with atomic_open(path) as fh:  # a file object: a full disk surfaces as ENOSPC naming `path` (storage.errors)
        torch.save(ckpt.to_dict(), fh)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    raw = read_checkpoint(path, "separator", map_location=map_location)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(path, f"format {found!r} is not {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(path, f"missing fields {missing}")
    if raw["preset"] not in ("tiny", "clapsep"):
        raise CheckpointError(path, f"unknown preset {raw['preset']!r}")
    for key in ("hparams", "config", "lineage", "metrics"):
        if not isinstance(raw[key], dict):
            raise CheckpointError(path, f"field {key!r} is a {type(raw[key]).__name__}, expected a mapping")
    if raw.get("train_state") is not None and not isinstance(raw["train_state"], dict):
        raise CheckpointError(path, f"field 'train_state' is a {type(raw['train_state']).__name__}, expected a mapping")
    return Checkpoint(preset=raw["preset"], hparams=dict(raw["hparams"]), state_dict=raw["state_dict"],
                      text_encoder=raw["text_encoder"], config=dict(raw["config"]), lineage=dict(raw["lineage"]),
                      metrics=dict(raw["metrics"]), code_version=str(raw["code_version"]),
                      train_state=raw.get("train_state"))


def model_from_checkpoint(ckpt: Checkpoint, path: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild the model and load its weights strictly (a mismatch names the offending keys)."""
    from models.separator.presets import build_model

    try:
        model = build_model(ckpt.preset, ckpt.hparams)
    except (TypeError, ValueError, KeyError) as exc:  # hparams edited into something the preset cannot build
        raise CheckpointError(path, f"hparams do not build preset {ckpt.preset!r}: {type(exc).__name__}: {exc}") from exc
    return load_weights(model, ckpt.state_dict, path, f"separator preset {ckpt.preset!r}")


TRAIN_STATE_KEYS = ("optimizer", "scheduler", "epoch", "step", "history", "best_loss")


def resume_train_state(state: Any, path: str | Path, optimizer: Any, scheduler: Any) -> None:
    """Restore optimiser and scheduler from a `last.pt` train state; a tampered or foreign state raises
    `CheckpointError` naming the file instead of a bare KeyError/ValueError from torch's optimiser."""
    missing = [k for k in TRAIN_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(path, f"train_state lacks {missing}; cannot resume from this file")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(path, f"train_state does not fit this model's optimiser/scheduler: "
                                    f"{type(exc).__name__}: {str(exc)[:200]}") from exc
