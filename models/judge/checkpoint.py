"""Checkpoint files for the in-project scorers (judge, PC estimator).

Why a tagged dict: `torch.load(weights_only=True)` refuses arbitrary pickled objects, so a checkpoint holds only
tensors and plain containers: `{"format": TAG, "version": N, "config": {...}, "state_dict": {...}, "meta": {...}}`.
The tag lets a loader say "this is a separator checkpoint, not a judge" instead of failing on missing keys, and a
truncated or foreign file fails with a message naming the file.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from models.checkpoint_io import CheckpointError, load_weights, read_checkpoint
from storage.atomic import atomic_write_bytes

__all__ = ["CheckpointError", "file_sha256", "load_checkpoint", "load_model", "save_checkpoint"]


def save_checkpoint(path: str | Path, fmt: str, version: int, config: dict[str, Any],
                    state_dict: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> str:
    """Write atomically and return the sha256 of the bytes written (recorded with every score)."""
    payload = {
        "format": fmt,
        "version": int(version),
        "config": config,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "meta": meta or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: str | Path, fmt: str, max_version: int) -> dict[str, Any]:
    """Load with `weights_only=True` and check the format tag and version."""
    path = Path(path)
    payload = read_checkpoint(path, "torch")
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(path, f"not a stemforge checkpoint (expected a dict tagged format={fmt!r})")
    if payload["format"] != fmt:
        raise CheckpointError(path, f"checkpoint format is {payload['format']!r}, expected {fmt!r}")
    version = int(payload.get("version", -1))
    if not 1 <= version <= max_version:
        raise CheckpointError(path, f"unsupported {fmt} checkpoint version {version} (this code reads 1..{max_version})")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(path, f"checkpoint lacks a '{key}' mapping")
    payload["sha256"] = file_sha256(path)
    return payload


def load_model(checkpoint: str, fmt: str, max_version: int, model_keys: tuple[str, ...] | list[str],
               build: Any, what: str, train_hint: str, title: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build a mini scorer from its checkpoint: format/version checks, config keys, weights that fit.

    Returns the model (eval mode, CPU) and the payload (config, meta, sha256) so every mini scorer loads the same way.
    """
    if not checkpoint:
        raise CheckpointError(f"<{what}.checkpoint>", f"no {title or what} checkpoint configured; train one with "
                              f"`{train_hint}` and set {what}.checkpoint")
    payload = load_checkpoint(checkpoint, fmt, max_version)
    missing = [k for k in model_keys if k not in payload["config"]]
    if missing:
        raise CheckpointError(checkpoint, f"{title or what} config lacks {missing}")
    try:
        model = build(payload["config"])
    except (TypeError, ValueError, KeyError) as exc:  # a config edited into something the architecture cannot build
        raise CheckpointError(checkpoint, f"{title or what} config does not build a model: {type(exc).__name__}: {exc}") from exc
    load_weights(model, payload["state_dict"], checkpoint, f"{title or what} architecture")
    return model.eval(), payload
