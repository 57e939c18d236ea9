"""Small helpers every scorer shares (CLAP, judge, PC): device choice, batching, checkpoint identity, score info.

Why a shared module: every score written to a table must say which model produced it (backend, checkpoint hash,
code version) so thresholds tuned on one model are never silently applied to another; computing that identity
the same way everywhere keeps tables comparable across scorers.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; anything else is validated by torch."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    torch.device(device)  # raises on nonsense such as 'gpu0'
    return device


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def checkpoint_hash(path: str | os.PathLike[str] | None) -> str:
    """Short sha256 of a checkpoint file or of every file in a model folder (cached by path, size and mtime).

    Returns "none" when there is no checkpoint (e.g. a randomly initialised model), so the column is never null.
    """
    if path is None:
        return "none"
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    stat_key = (str(p.resolve()), sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files), default=0))
    if stat_key in _HASH_CACHE:
        return _HASH_CACHE[stat_key]
    h = hashlib.sha256()
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    digest = h.hexdigest()[:16]
    _HASH_CACHE[stat_key] = digest
    return digest


@dataclass(frozen=True)
class ScoreInfo:
    """Identity of the model behind a score; stored next to every score column."""

    backend: str
    checkpoint_hash: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def info_columns(prefix: str, info: dict[str, Any] | ScoreInfo, n: int) -> dict[str, list[str]]:
    """`{prefix}_backend`, `{prefix}_checkpoint_hash`, `{prefix}_version` columns repeated for `n` rows."""
    d = info.as_dict() if isinstance(info, ScoreInfo) else dict(info)
    return {f"{prefix}_{key}": [str(d.get(key, ""))] * n for key in ("backend", "checkpoint_hash", "version")}


def as_batch(audios: np.ndarray | Sequence[np.ndarray], name: str = "audio") -> np.ndarray:
    """Validate `[N, T]` float audio (a list of equal-length 1-D arrays is stacked); reject NaN/Inf clearly."""
    if isinstance(audios, np.ndarray):
        arr = audios
    else:
        lengths = {len(a) for a in audios}
        if len(lengths) > 1:
            raise ValueError(f"{name}: clips in one batch must have equal length, got lengths {sorted(lengths)}")
        arr = np.stack([np.asarray(a) for a in audios]) if len(audios) else np.zeros((0, 0), np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected [N, T] mono audio, got shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or Inf samples")
    return arr


def equal_length_groups(lengths: Sequence[int], rates: Sequence[int], keep: Sequence[bool] | None = None) -> dict[tuple[int, int], list[int]]:
    """Row indices grouped by (length, sample rate): scorers take `[N, T]` at one rate, and padding would change
    embeddings, so rows are never padded. Rows with `keep[i]` False are left out (their score stays NaN)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (n, sr) in enumerate(zip(lengths, rates)):
        if keep is None or keep[i]:
            groups.setdefault((int(n), int(sr)), []).append(i)
    return groups
