"""WebDataset shard store: deterministic, crash-safe, resumable writing with a Parquet index, and readers.

Importing this package is light (no torch, no ray): the readers are loaded on first use of their names
(`iter_samples`, `ShardIterableDataset`, ...). Ray lives in `engine/` only: parallel writing is
`engine/shard_jobs.py`, the Ray Data reader `engine/ray_reader.py`.
"""
from __future__ import annotations

import importlib
from typing import Any

from storage.shards.config import ShardConfig
from storage.shards.index import open_index, read_index, read_member
from storage.shards.store import (SkipSample, StoreError, StorePlan, finalize_store, is_complete, pending_groups,
                                  plan_store, read_group_record, write_group, write_store)
from storage.shards.writer import SampleError, TarShardWriter, encode_members

_LAZY = {
    "iter_samples": "storage.shards.reader",
    "ShardIterableDataset": "storage.shards.reader",
    "ShardReadError": "storage.shards.reader",
    "list_shards": "storage.shards.reader",
    "summarize_store": "storage.shards.inspect",
    "verify_store": "storage.shards.inspect",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'storage.shards' has no attribute {name!r}")


__all__ = [
    "SampleError", "ShardConfig", "SkipSample", "StoreError", "StorePlan", "TarShardWriter", "encode_members",
    "finalize_store", "is_complete", "open_index", "pending_groups", "plan_store", "read_group_record", "read_index", "read_member",
    "write_group", "write_store", *_LAZY,
]
