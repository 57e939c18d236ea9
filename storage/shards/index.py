"""Parquet index of a shard store: find, filter and seek to samples without opening the tars.

One index file per shard (`index/<shard>.parquet`), written atomically right after the shard is published; its
presence is what marks the shard committed for a resumed run. The file's schema metadata records the half-open
range of sample numbers the shard covers, so a resumed run knows where to continue even when the sample factory
dropped samples. `open_index` presents all parts as one pyarrow dataset.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from storage.atomic import atomic_path
from storage.shards.writer import SampleSpan

INDEX_DIR = "index"
INDEX_VERSION = 1
RANGE_META = b"stemforge.sample_range"

INDEX_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("sample_index", pa.int64(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),  # first header of the sample inside the tar
    pa.field("size", pa.int64(), nullable=False),  # bytes from `offset` covering all its members
    pa.field("members", pa.list_(pa.string()), nullable=False),
    pa.field("member_offsets", pa.list_(pa.int64()), nullable=False),  # payload offsets (tarinfo.offset_data)
    pa.field("member_sizes", pa.list_(pa.int64()), nullable=False),
    pa.field("duration_s", pa.float64()),
    pa.field("sample_rate", pa.int64()),
    pa.field("labels", pa.list_(pa.string())),  # target labels (positive labels when absent)
    pa.field("positive_labels", pa.list_(pa.string())),
    pa.field("negative_labels", pa.list_(pa.string())),
    pa.field("operator", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("recipe", pa.string()),
    pa.field("silent_target", pa.bool_()),
    pa.field("json", pa.string()),
], metadata={b"stemforge.index_version": str(INDEX_VERSION).encode()})


class ShardIndexError(ValueError):
    """An index file that cannot be used; names the file."""


def index_dir(store: str | Path) -> Path:
    return Path(store) / INDEX_DIR


def index_path(store: str | Path, shard_name: str) -> Path:
    return index_dir(store) / f"{Path(shard_name).stem}.parquet"


def _str_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _num(value: Any, cast: type) -> Any:
    try:
        return None if value is None else cast(value)
    except (TypeError, ValueError):
        return None


def index_row(span: SampleSpan, shard: str, sample_index: int, meta: Mapping[str, Any] | None,
              json_text: str | None) -> dict[str, Any]:
    """One index row from a written sample's layout and its `json` metadata (missing fields become null)."""
    meta = meta or {}
    target = meta.get("target_labels")
    labels = _str_list(target if target else meta.get("positive_labels"))
    return {
        "key": span.key,
        "sample_index": int(sample_index),
        "shard": shard,
        "offset": span.offset,
        "size": span.size,
        "members": [m.name for m in span.members],
        "member_offsets": [m.offset for m in span.members],
        "member_sizes": [m.size for m in span.members],
        "duration_s": _num(meta.get("duration_s"), float),
        "sample_rate": _num(meta.get("sample_rate"), int),
        "labels": labels,
        "positive_labels": _str_list(meta.get("positive_labels")),
        "negative_labels": _str_list(meta.get("negative_labels")),
        "operator": None if meta.get("operator") is None else str(meta.get("operator")),
        "prompt": None if meta.get("prompt") is None else str(meta.get("prompt")),
        "recipe": None if meta.get("recipe") is None else str(meta.get("recipe")),
        "silent_target": None if meta.get("silent_target") is None else bool(meta.get("silent_target")),
        "json": json_text,
    }


def write_shard_index(store: str | Path, shard_name: str, rows: list[dict[str, Any]],
                      sample_range: tuple[int, int]) -> Path:
    """Atomically write `index/<shard>.parquet`; this is the shard's commit marker."""
    schema = INDEX_SCHEMA.with_metadata({**INDEX_SCHEMA.metadata,
                                         RANGE_META: json.dumps(list(sample_range)).encode()})
    table = pa.Table.from_pylist(rows, schema=schema)
    path = index_path(store, shard_name)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_sample_range(path: str | Path) -> tuple[int, int]:
    """The `[first, end)` sample numbers an index part covers (from its schema metadata)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        first, end = json.loads(meta[RANGE_META])
        return int(first), int(end)
    except Exception as exc:  # noqa: BLE001 - any failure means the part is unusable
        raise ShardIndexError(f"{path}: not a readable shard index part ({exc})") from exc


def index_parts(store: str | Path) -> list[Path]:
    d = index_dir(store)
    return sorted(p for p in d.glob("*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


def open_index(store: str | Path) -> pads.Dataset:
    """All index parts of a store as one pyarrow dataset (filter with `pyarrow.dataset` expressions)."""
    parts = index_parts(store)
    if not parts:
        raise ShardIndexError(f"{store}: no index parts under {index_dir(store)} (not a shard store, or not written yet)")
    return pads.dataset([str(p) for p in parts], schema=INDEX_SCHEMA, format="parquet")


def read_index(store: str | Path, columns: Iterable[str] | None = None, filter: Any = None) -> pa.Table:
    """The index as one table, sorted by sample number."""
    table = open_index(store).to_table(columns=None if columns is None else list(dict.fromkeys([*columns, "sample_index"])),
                                       filter=filter)
    return table.sort_by("sample_index")


def read_member(store: str | Path, row: Mapping[str, Any], member: str) -> bytes:
    """Read one member's payload by seeking into its shard (`member` is an extension like "mix.flac" or a full name)."""
    names = list(row["members"])
    full = member if member in names else f"{row['key']}.{member}"
    if full not in names:
        raise KeyError(f"sample {row['key']!r} in {row['shard']} has no member {member!r} (members: {names})")
    i = names.index(full)
    path = Path(store) / row["shard"]
    with open(path, "rb") as fh:
        fh.seek(int(row["member_offsets"][i]))
        data = fh.read(int(row["member_sizes"][i]))
    if len(data) != int(row["member_sizes"][i]):
        raise ShardIndexError(f"{path}: member {full} truncated ({len(data)} of {row['member_sizes'][i]} bytes)")
    return data
