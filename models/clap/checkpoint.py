"""Checkpoint files for in-project models: a tagged dict saved atomically, loaded with `weights_only=True`.

Why a format tag: `torch.load` happily returns any pickle-free dict, so loading a judge checkpoint as a CLAP (or a
laion checkpoint as ours) would otherwise fail deep inside `load_state_dict` with an unreadable key list. The tag
and version let us say exactly what the file is and what was expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from storage.atomic import atomic_path
from storage.errors import reconstructible


@reconstructible
class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or not of the expected format; names the file."""

    def __init__(self, path: str | os.PathLike[str], message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


def save_checkpoint(path: str | os.PathLike[str], fmt: str, version: int, payload: dict[str, Any]) -> Path:
    """Write `{"format": fmt, "version": version, **payload}` atomically (tmp + fsync + rename)."""
    path = Path(path)
    data = {"format": fmt, "version": int(version), **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def load_checkpoint(path: str | os.PathLike[str], fmt: str, max_version: int) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` and check its format tag and version."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, "checkpoint not found")
    if p.is_dir():
        raise CheckpointError(p, f"is a directory, expected a {fmt} checkpoint file")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickled objects outside the safe list
        raise CheckpointError(p, f"not a readable {fmt} checkpoint (corrupt, truncated or unsafe pickle): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(data, dict) or "format" not in data:
        raise CheckpointError(p, f"not a stemforge checkpoint (no format tag); expected format {fmt!r}")
    if data["format"] != fmt:
        raise CheckpointError(p, f"checkpoint format is {data['format']!r}, expected {fmt!r}")
    version = data.get("version")
    if not isinstance(version, int) or version < 1 or version > max_version:
        raise CheckpointError(p, f"unsupported {fmt} checkpoint version {version!r} (this code reads 1..{max_version})")
    return data
