"""Checkpoint files for in-project models: a tagged dict saved atomically, loaded with `weights_only=True`
(`models.checkpoint_io.read_checkpoint`).

Why a format tag: `torch.load` happily returns any pickle-free dict, so loading a judge checkpoint as a CLAP (or a
laion checkpoint as ours) would otherwise fail deep inside `load_state_dict` with an unreadable key list. The tag
and version let us say exactly what the file is and what was expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from models.checkpoint_io import CheckpointError, read_checkpoint
from storage.atomic import atomic_open

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike[str], fmt: str, version: int, payload: dict[str, Any]) -> Path:
    """Write `{"format": fmt, "version": version, **payload}` atomically (tmp + fsync + rename)."""
    path = Path(path)
    data = {"format": fmt, "version": int(version), **payload}
    with atomic_open(path) as fh:  # a file object: a full disk surfaces as ENOSPC naming `path` (storage.errors)
        torch.save(data, fh)
    return path


def load_checkpoint(path: str | os.PathLike[str], fmt: str, max_version: int) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` and check its format tag and version."""
    p = Path(path)
    data = read_checkpoint(p, fmt)
    if not isinstance(data, dict) or "format" not in data:
        raise CheckpointError(p, f"not a stemforge checkpoint (no format tag); expected format {fmt!r}")
    if data["format"] != fmt:
        raise CheckpointError(p, f"checkpoint format is {data['format']!r}, expected {fmt!r}")
    version = data.get("version")
    if not isinstance(version, int) or version < 1 or version > max_version:
        raise CheckpointError(p, f"unsupported {fmt} checkpoint version {version!r} (this code reads 1..{max_version})")
    return data
