"""Parquet manifests with explicit, versioned schemas.

A manifest is a directory of Parquet part files (a pyarrow dataset). Appending writes a new part atomically, so
an import killed midway leaves the previous parts intact, and reading streams record batches so a manifest of
millions of clips never has to fit in memory.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage.atomic import atomic_path

SCHEMA_VERSION = 1
DOMAINS = ("speech", "music", "sound")
SPLITS = ("train", "val", "test")

_string_list = pa.list_(pa.string())

_CLIP_FIELDS = [
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("sample_rate", pa.int32(), nullable=False),
    pa.field("num_frames", pa.int64(), nullable=False),
    pa.field("duration_s", pa.float64(), nullable=False),
    pa.field("labels", _string_list, nullable=False),
    pa.field("label_ids", _string_list, nullable=False),
    pa.field("domain", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    # Label normalisation beside `labels` (which holds slugs, the key every stage uses: `alarm_clock`):
    # `label_names` the display form ("Alarm clock", the AudioSet name where known), `label_mids` the AudioSet
    # MID of each label (null item where the label is not an AudioSet class). Null on manifests written before.
    pa.field("label_names", _string_list, nullable=True),
    pa.field("label_mids", _string_list, nullable=True),
    # The sounding part of the clip (first to last frame within 40 dB of its loudest frame), so mixing cuts
    # event excerpts where the clip is audible; null = unknown (use the whole clip).
    pa.field("active_start_s", pa.float64(), nullable=True),
    pa.field("active_end_s", pa.float64(), nullable=True),
]

EVENT_TYPE = pa.struct(
    [
        pa.field("label", pa.string()),
        pa.field("onset_s", pa.float64()),
        pa.field("offset_s", pa.float64()),
    ]
)


def _with_meta(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={b"stemforge.schema": name.encode(), b"stemforge.schema_version": str(SCHEMA_VERSION).encode()})


SOURCE_CLIP_SCHEMA = _with_meta("source_clip", _CLIP_FIELDS)
NATURAL_SCENE_SCHEMA = _with_meta(
    "natural_scene",
    _CLIP_FIELDS
    + [
        pa.field("event_labels", _string_list, nullable=False),
        pa.field("events", pa.list_(EVENT_TYPE), nullable=True),
        pa.field("caption", pa.string(), nullable=True),
        pa.field("audit_dir", pa.string(), nullable=True),
        # `stems` imports: "sum" when the audit stems add up to the mixture (residual SDR >= the import's
        # `stems_sum_min_db`), "not_sum" for a real recording whose stems do not (bleed, mastering); null = no
        # check made (demo scenes are sums by construction). `sum_sdr_db`: 10 log10(|mix|^2 / |mix - sum|^2).
        pa.field("stems_relation", pa.string(), nullable=True),
        pa.field("sum_sdr_db", pa.float64(), nullable=True),
    ],
)
AUDIT_STEM_SCHEMA = _with_meta(
    "audit_stem",
    [
        pa.field("scene_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("source_clip_id", pa.string(), nullable=True),
    ],
)
QUARANTINE_SCHEMA = _with_meta(
    "quarantine",
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_kind", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False),
    ],
)

SCHEMAS = {
    "source_clip": SOURCE_CLIP_SCHEMA,
    "natural_scene": NATURAL_SCENE_SCHEMA,
    "audit_stem": AUDIT_STEM_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
}


class ManifestError(ValueError):
    pass


def file_hash(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of the file bytes: identical re-imports dedupe whatever their path."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def schema_name(schema: pa.Schema) -> str | None:
    meta = schema.metadata or {}
    value = meta.get(b"stemforge.schema")
    return value.decode() if value else None


def _parts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("part-*.parquet"))


def _to_table(directory: Path, schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    """Convert rows to a table of exactly `schema`, failing (before anything is written) on a wrong type or a
    missing required value: pyarrow itself fills absent keys with nulls and only objects at write time."""
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
        raise ManifestError(f"{directory}: rows do not match schema {schema_name(schema)}: {exc}") from exc
    for field in schema:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            first = next(i for i, v in enumerate(column.to_pylist()) if v is None)
            raise ManifestError(f"{directory}: rows do not match schema {schema_name(schema)}: required column '{field.name}' is missing or null (row {first})")
    return table.replace_schema_metadata(schema.metadata)


def append_rows(directory: str | Path, schema: pa.Schema, rows: list[dict[str, Any]]) -> Path | None:
    """Validate `rows` against `schema` and write them as a new part file; no rows, no file."""
    if not rows:
        return None
    directory = Path(directory)
    table = _to_table(directory, schema, rows)
    directory.mkdir(parents=True, exist_ok=True)
    index = len(_parts(directory))
    final = directory / f"part-{index:05d}.parquet"
    while final.exists():
        index += 1
        final = directory / f"part-{index:05d}.parquet"
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return final


def write_manifest(directory: str | Path, schema: pa.Schema, rows: list[dict[str, Any]]) -> Path:
    """Replace a manifest by exactly `rows` (used for derived tables that are recomputed whole)."""
    directory = Path(directory)
    table = _to_table(directory, schema, rows)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / "part-00000.parquet"
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    for extra in _parts(directory):
        if extra != final:
            extra.unlink()
    return final


def open_dataset(path: str | Path, expect: str | None = None) -> ds.Dataset:
    """Open a manifest directory (or single .parquet file) lazily, checking its schema name and version."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest does not exist")
    if path.is_dir():
        files = [str(p) for p in _parts(path)] or [str(p) for p in sorted(path.glob("*.parquet"))]
        if not files:
            if expect is not None and expect in SCHEMAS:
                return ds.dataset(pa.Table.from_pylist([], schema=SCHEMAS[expect]))
            raise ManifestError(f"{path}: no parquet files in manifest directory")
        dataset = ds.dataset(files, format="parquet")
    else:
        dataset = ds.dataset(str(path), format="parquet")
    if expect is not None:
        found = schema_name(dataset.schema)
        if found != expect:
            raise ManifestError(f"{path}: expected a '{expect}' manifest, found '{found}'")
        version = int((dataset.schema.metadata or {}).get(b"stemforge.schema_version", b"0"))
        if version > SCHEMA_VERSION:
            raise ManifestError(f"{path}: schema version {version} is newer than this stemforge ({SCHEMA_VERSION})")
    return dataset


def iter_rows(path: str | Path, columns: list[str] | None = None, filter: Any = None, expect: str | None = None, batch_size: int = 4096) -> Iterator[dict[str, Any]]:
    """Stream rows as dicts, one record batch at a time."""
    dataset = open_dataset(path, expect)
    for batch in dataset.to_batches(columns=columns, filter=filter, batch_size=batch_size):
        yield from batch.to_pylist()


def read_column(path: str | Path, column: str, expect: str | None = None) -> list[Any]:
    dataset = open_dataset(path, expect)
    values: list[Any] = []
    for batch in dataset.to_batches(columns=[column]):
        values.extend(batch.column(0).to_pylist())
    return values


def count_rows(path: str | Path, filter: Any = None) -> int:
    return open_dataset(path).count_rows(filter=filter)


def read_table(path: str | Path, columns: list[str] | None = None, filter: Any = None, expect: str | None = None) -> pa.Table:
    """Materialise a (filtered) manifest; for small manifests or selective filters only."""
    return open_dataset(path, expect).to_table(columns=columns, filter=filter)


def storable_text(text: str) -> str:
    """`text` with the bytes of a non-UTF-8 file name (lone surrogates from os.fsdecode) written as \\xNN escapes:
    a Parquet string must be UTF-8, and a quarantine row has to name such a file rather than fail to be written."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name decodes to (\\ud800 from JSON): escape it as code point
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def quarantine_row(path: str | Path, stage: str, error_kind: str, message: str) -> dict[str, Any]:
    return {
        "path": storable_text(str(path)),
        "stage": stage,
        "error_kind": error_kind,
        "message": storable_text(message),
        "time": int(time.time() * 1000),
    }


def available_columns(path: str | Path, columns: list[str], expect: str | None = None) -> list[str]:
    """The subset of `columns` the manifest has (optional columns added after a manifest was written)."""
    names = set(open_dataset(path, expect).schema.names)
    return [c for c in columns if c in names]
