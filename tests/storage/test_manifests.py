"""Manifests: versioned schemas, atomic appends, streamed reads, content hashing and quarantine rows."""
from __future__ import annotations

import datetime as dt
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from storage import manifests as mf


def clip_row(i: int, split: str = "train", labels: list[str] | None = None) -> dict:
    labels = labels or ["dog"]
    return {
        "clip_id": f"c{i:04d}", "path": f"/data/c{i:04d}.flac", "sample_rate": 16000, "num_frames": 16000 * (i + 1),
        "duration_s": float(i + 1), "labels": labels, "label_ids": labels, "domain": "sound", "split": split,
        "content_hash": f"h{i}", "dataset": "t",
    }


def test_append_writes_new_parts_and_reads_back(tmp_path: Path) -> None:
    d = tmp_path / "sources"
    assert mf.append_rows(d, mf.SOURCE_CLIP_SCHEMA, []) is None and not d.exists()
    p0 = mf.append_rows(d, mf.SOURCE_CLIP_SCHEMA, [clip_row(0), clip_row(1)])
    p1 = mf.append_rows(d, mf.SOURCE_CLIP_SCHEMA, [clip_row(2, "test")])
    assert p0 is not None and p1 is not None
    assert [p.name for p in sorted(d.glob("*.parquet"))] == ["part-00000.parquet", "part-00001.parquet"]
    rows = list(mf.iter_rows(d, expect="source_clip"))
    assert [r["clip_id"] for r in rows] == ["c0000", "c0001", "c0002"]
    assert rows[2]["labels"] == ["dog"] and rows[2]["split"] == "test"
    assert mf.count_rows(d) == 3
    assert mf.read_column(d, "content_hash") == ["h0", "h1", "h2"]
    assert list(d.glob("*.tmp")) == []


def test_iter_rows_streams_in_batches_with_filter(tmp_path: Path) -> None:
    d = tmp_path / "m"
    for start in range(0, 30, 10):
        mf.append_rows(d, mf.SOURCE_CLIP_SCHEMA, [clip_row(i, "test" if i % 3 == 0 else "train") for i in range(start, start + 10)])
    it = mf.iter_rows(d, columns=["clip_id"], filter=ds.field("split") == "test", batch_size=2)
    assert isinstance(it, types.GeneratorType)  # lazy: nothing is materialised until iterated
    first = next(it)
    assert first == {"clip_id": "c0000"}
    rest = [r["clip_id"] for r in it]
    assert rest == [f"c{i:04d}" for i in range(3, 30, 3)]
    table = mf.read_table(d, columns=["clip_id", "duration_s"], filter=ds.field("duration_s") > 28.0)
    assert table.column("clip_id").to_pylist() == ["c0028", "c0029"]


def test_rows_not_matching_schema_are_rejected(tmp_path: Path) -> None:
    bad = clip_row(0)
    bad["num_frames"] = "many"
    with pytest.raises(mf.ManifestError, match="source_clip"):
        mf.append_rows(tmp_path / "m", mf.SOURCE_CLIP_SCHEMA, [bad])
    missing = clip_row(1)
    del missing["clip_id"]
    with pytest.raises(mf.ManifestError):
        mf.append_rows(tmp_path / "m", mf.SOURCE_CLIP_SCHEMA, [missing])
    assert not list((tmp_path / "m").glob("*.parquet"))


def test_schema_name_and_version_are_checked(tmp_path: Path) -> None:
    d = tmp_path / "q"
    mf.append_rows(d, mf.QUARANTINE_SCHEMA, [mf.quarantine_row("/x.wav", "import", "missing", "file does not exist")])
    with pytest.raises(mf.ManifestError, match="expected a 'source_clip' manifest, found 'quarantine'"):
        list(mf.iter_rows(d, expect="source_clip"))
    future = tmp_path / "future"
    future.mkdir()
    schema = mf.SOURCE_CLIP_SCHEMA.with_metadata({b"stemforge.schema": b"source_clip", b"stemforge.schema_version": b"99"})
    pq.write_table(pa.Table.from_pylist([clip_row(0)], schema=schema), future / "part-00000.parquet")
    with pytest.raises(mf.ManifestError, match="newer"):
        mf.open_dataset(future, expect="source_clip")
    with pytest.raises(mf.ManifestError, match="does not exist"):
        mf.open_dataset(tmp_path / "absent")


def test_empty_manifest_directory(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    assert list(mf.iter_rows(d, expect="audit_stem")) == []
    with pytest.raises(mf.ManifestError, match="no parquet"):
        mf.open_dataset(d)


def test_write_manifest_replaces_all_parts(tmp_path: Path) -> None:
    d = tmp_path / "m"
    mf.append_rows(d, mf.SOURCE_CLIP_SCHEMA, [clip_row(0)])
    mf.append_rows(d, mf.SOURCE_CLIP_SCHEMA, [clip_row(1)])
    mf.write_manifest(d, mf.SOURCE_CLIP_SCHEMA, [clip_row(7)])
    assert [p.name for p in d.glob("*.parquet")] == ["part-00000.parquet"]
    assert mf.read_column(d, "clip_id", expect="source_clip") == ["c0007"]


def test_natural_scene_rows_with_events(tmp_path: Path) -> None:
    row = clip_row(0, labels=["dog", "rain"])
    row.update({"event_labels": ["dog", "rain"], "events": [{"label": "dog", "onset_s": 0.5, "offset_s": 2.0}],
                "caption": "a dog and rain", "audit_dir": None})
    mf.append_rows(tmp_path / "s", mf.NATURAL_SCENE_SCHEMA, [row])
    back = next(mf.iter_rows(tmp_path / "s", expect="natural_scene"))
    assert back["events"] == [{"label": "dog", "onset_s": 0.5, "offset_s": 2.0}]
    assert back["audit_dir"] is None and back["event_labels"] == ["dog", "rain"]


def test_quarantine_row_timestamp_roundtrip(tmp_path: Path) -> None:
    row = mf.quarantine_row(Path("/data/bad.wav"), "import", "non_finite", "3 NaN/Inf samples")
    mf.append_rows(tmp_path / "q", mf.QUARANTINE_SCHEMA, [row])
    back = next(mf.iter_rows(tmp_path / "q", expect="quarantine"))
    assert back["path"] == "/data/bad.wav" and back["error_kind"] == "non_finite"
    age = dt.datetime.now(dt.timezone.utc) - back["time"]
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=5)


def test_file_hash_depends_on_content_only(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.bin", tmp_path / "sub_b.bin", tmp_path / "c.bin"
    a.write_bytes(b"x" * 3_000_000)  # larger than one read chunk
    b.write_bytes(b"x" * 3_000_000)
    c.write_bytes(b"x" * 2_999_999 + b"y")
    assert mf.file_hash(a) == mf.file_hash(b) != mf.file_hash(c)
    assert len(mf.file_hash(a)) == 64
