"""A checkpoint's identity by its weights, not its file bytes.

Why: a checkpoint file also records when it was saved, how long training took, the temporary name torch's zip
was written under and absolute paths in its lineage, so two runs of the same config on other machines (or in
other directories) write different bytes for the same model. Lineage (tier shards, filter decisions, reports)
must name the model, so it uses this hash of every tensor, in key-path order.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from models.checkpoint_io import read_checkpoint


def _walk(node: Any, path: str, out: list[tuple[str, torch.Tensor]]) -> None:
    if isinstance(node, torch.Tensor):
        out.append((path, node))
    elif isinstance(node, dict):
        for k in sorted(node, key=str):
            _walk(node[k], f"{path}/{k}", out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _walk(v, f"{path}/{i}", out)


def weights_hash(path: str | Path) -> str:
    """sha256 over (key path, dtype, shape, bytes) of every tensor in the checkpoint at `path`."""
    obj = read_checkpoint(path, "model")  # weights-only, like every checkpoint load (models/checkpoint_io.py)
    tensors: list[tuple[str, torch.Tensor]] = []
    _walk(obj, "", tensors)
    if not tensors:
        raise ValueError(f"{path}: no tensors in the checkpoint")
    h = hashlib.sha256()
    for key, t in tensors:
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.detach().cpu().contiguous().reshape(-1)  # 1-d: a 0-d tensor cannot be viewed as bytes
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()
