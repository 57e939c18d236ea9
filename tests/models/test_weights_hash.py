"""The weights hash names a model, not a file: the same tensors saved twice (other time, other name, other extra
fields) hash the same; one changed weight does not."""
from __future__ import annotations

import time

import torch

from models.weights import weights_hash


def test_same_weights_same_hash_whatever_the_file(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3), "step": torch.tensor(4)}, "config": {"lr": 0.1}}
    a, b = tmp_path / "a.pt", tmp_path / "sub" / "b.pt"
    b.parent.mkdir()
    torch.save({**state, "saved_at": time.time(), "path": str(a)}, a)
    torch.save({**state, "saved_at": time.time() + 5, "path": str(b)}, b)
    assert a.read_bytes() != b.read_bytes()
    assert weights_hash(a) == weights_hash(b)
    changed = {"model": {"w": torch.arange(6.0).reshape(2, 3).clone(), "step": torch.tensor(4)}}
    changed["model"]["w"][0, 0] = 1e-6
    torch.save(changed, tmp_path / "c.pt")
    assert weights_hash(tmp_path / "c.pt") != weights_hash(a)
    torch.save({"model": {"w": torch.arange(6.0).reshape(3, 2), "step": torch.tensor(4)}}, tmp_path / "d.pt")
    assert weights_hash(tmp_path / "d.pt") != weights_hash(a)  # same bytes, other shape
