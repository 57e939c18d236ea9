"""WebDataset shard store: deterministic, crash-safe, resumable writing with a Parquet index, and readers.

Importing this package is light (no torch, no ray): the readers are loaded on first use of their names
(`iter_samples`, `ShardIterableDataset`, ...), and `read_shards_ray` imports ray only when called.
"""
from __future__ import annotations

import importlib
from typing import Any

from storage.shards.config import ShardConfig
from storage.shards.index import open_index, read_index, read_member
from storage.shards.store import StoreError, StorePlan, is_complete, remove_partials, write_group, write_store
from storage.shards.writer import SampleError, TarShardWriter, encode_members

_LAZY = {
    "iter_samples": "storage.shards.reader",
    "ShardIterableDataset": "storage.shards.reader",
    "ShardReadError": "storage.shards.reader",
    "list_shards": "storage.shards.reader",
    "read_shards_ray": "storage.shards.ray_reader",
    "summarize_store": "storage.shards.inspect",
    "verify_store": "storage.shards.inspect",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'storage.shards' has no attribute {name!r}")


__all__ = [
    "SampleError", "ShardConfig", "StoreError", "StorePlan", "TarShardWriter", "encode_members", "is_complete",
    "open_index", "read_index", "read_member", "remove_partials", "write_group", "write_store", *_LAZY,
]
