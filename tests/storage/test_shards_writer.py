"""Shard writer and store: deterministic bytes, tar header hygiene, limits, index offsets, bad input."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from storage.shards import SampleError, ShardConfig, TarShardWriter, encode_members, read_index, read_member, write_store
from toy_shards import SyntheticSamples

FACTORY = SyntheticSamples(seed=3, seconds=0.1)


def test_same_seed_gives_byte_identical_shards_and_sane_headers(tmp_path: Path) -> None:
    cfg = ShardConfig(max_count=4)
    a = write_store(tmp_path / "a", FACTORY, 10, cfg)
    b = write_store(tmp_path / "b", FACTORY, 10, cfg)
    c = write_store(tmp_path / "c", SyntheticSamples(seed=4, seconds=0.1), 10, cfg)
    names = [s["name"] for s in a["shards"]]
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s["count"] for s in a["shards"]] == [4, 4, 2]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert a["plan_hash"] == b["plan_hash"]
    with tarfile.open(tmp_path / "a" / names[0]) as tf:
        members = tf.getmembers()
    assert [m.name for m in members[:4]] == [f"{FACTORY(0)['__key__']}.{ext}" for ext in
                                             ("json", "mix.flac", "residual.flac", "target.flac")]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)


def test_index_offsets_point_at_member_payloads(tmp_path: Path) -> None:
    write_store(tmp_path, FACTORY, 7, ShardConfig(max_count=3))
    table = read_index(tmp_path)
    assert table.column("sample_index").to_pylist() == list(range(7))
    rows = table.to_pylist()
    for row in rows:
        with tarfile.open(tmp_path / row["shard"]) as tf:
            by_name = {m.name: m for m in tf.getmembers()}
            for name, off, size in zip(row["members"], row["member_offsets"], row["member_sizes"]):
                assert (by_name[name].offset_data, by_name[name].size) == (off, size)
                assert read_member(tmp_path, row, name.split(".", 1)[1]) == tf.extractfile(by_name[name]).read()
        meta = json.loads(row["json"])
        assert row["labels"] == meta["target_labels"] and row["duration_s"] == pytest.approx(0.1)
        assert row["recipe"] == "synthetic_noise" and row["operator"] == "extract"
    # Filtering without opening tars.
    dog = pads.field("prompt") == rows[0]["prompt"]
    assert read_index(tmp_path, filter=dog).num_rows == sum(r["prompt"] == rows[0]["prompt"] for r in rows)


def test_byte_limit_cuts_inside_a_group_with_deterministic_names(tmp_path: Path) -> None:
    one = len(encode_members(FACTORY(0))[1][1][1]) * 3  # about one sample's audio
    cfg = ShardConfig(max_count=5, max_bytes=max(4096, int(one * 2.5) // 10240 * 10240 + 10240))
    manifest = write_store(tmp_path, FACTORY, 7, cfg)
    names = [s["name"] for s in manifest["shards"]]
    assert names[0] == "shard-000000.tar" and "shard-000000_01.tar" in names and names[-1].startswith("shard-000001")
    for s in manifest["shards"]:
        assert s["bytes"] <= cfg.max_bytes or s["count"] == 1
        assert s["count"] >= 1
    assert sum(s["count"] for s in manifest["shards"]) == 7


def test_dropped_samples_never_leave_an_empty_shard(tmp_path: Path) -> None:
    factory = SyntheticSamples(seed=1, seconds=0.05, drop_every=2)
    # Every odd sample is dropped; with max_count=1 every odd group renders nothing and must produce no file.
    manifest = write_store(tmp_path, factory, 6, ShardConfig(max_count=1))
    assert manifest["num_samples"] == 3 and manifest["num_dropped"] == 3
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar", "shard-000002.tar",
                                                             "shard-000004.tar"]
    writer = TarShardWriter(tmp_path / "never.tar")
    assert writer.commit() is None and not (tmp_path / "never.tar").exists()


def test_extra_members_are_stored_and_indexed(tmp_path: Path) -> None:
    write_store(tmp_path, SyntheticSamples(seed=2, seconds=0.05, extra_members=("scene.flac",)), 2, ShardConfig())
    row = read_index(tmp_path).to_pylist()[0]
    assert [m.split(".", 1)[1] for m in row["members"]] == ["json", "mix.flac", "residual.flac", "scene.flac",
                                                            "target.flac"]


@pytest.mark.parametrize("key, match", [("a.b", "dot"), ("a/b", "slash"), ("", "non-empty"), ("a b", "whitespace"),
                                        (None, "non-empty")])
def test_bad_keys_are_rejected_with_the_key_named(key: object, match: str) -> None:
    with pytest.raises(SampleError, match=match):
        encode_members({"__key__": key, "json": {}})


def test_bad_members_are_rejected_and_no_shard_is_published(tmp_path: Path) -> None:
    import numpy as np

    with pytest.raises(SampleError, match="'mix.flac' is ndarray"):
        encode_members({"__key__": "k1", "mix.flac": np.zeros(4)})
    with pytest.raises(SampleError, match="no members"):
        encode_members({"__key__": "k1"})

    def factory(i: int):
        return FACTORY(i) if i < 2 else {"__key__": "bad.key", "json": {}}

    with pytest.raises(SampleError, match="bad.key"):
        write_store(tmp_path, factory, 4, ShardConfig(max_count=4))
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".*.tmp"))


def test_duplicate_key_in_a_shard_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="duplicate key"):
        write_store(tmp_path, lambda i: {"__key__": "same", "json": {"i": i}}, 2, ShardConfig())


def test_groups_written_separately_in_any_order_match_sequential(tmp_path: Path) -> None:
    """The many-writer protocol: plan once, write groups independently (here in reverse order, as parallel
    workers might finish), finalize once; same files as the sequential convenience."""
    from storage.shards import StoreError, finalize_store, pending_groups, plan_store, write_group

    cfg = ShardConfig(max_count=3)
    write_store(tmp_path / "seq", FACTORY, 8, cfg)
    out = tmp_path / "par"
    plan = plan_store(out, 8, cfg)
    assert pending_groups(out, plan) == [0, 1, 2]
    for j in (2, 0):
        assert write_group(out, plan, j, FACTORY)["skipped"] is False
    with pytest.raises(StoreError, match="shard-000001"):  # names the group that is missing
        finalize_store(out, plan)
    assert not (out / "_SUCCESS").exists() and pending_groups(out, plan) == [1]
    write_group(out, plan, 1, FACTORY)
    manifest = finalize_store(out, plan)
    assert manifest["num_samples"] == 8 and (out / "_SUCCESS").exists()
    seq = {p.name: p.read_bytes() for p in (tmp_path / "seq").glob("*.tar")}
    par = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert seq == par and len(seq) == 3
    assert json.loads((out / "manifest.json").read_text()) == json.loads((tmp_path / "seq" / "manifest.json").read_text())


def test_skip_sample_reason_is_recorded_in_the_group_marker(tmp_path: Path) -> None:
    from storage.shards import SkipSample, plan_store, read_group_record

    def factory(i: int):
        if i == 1:
            raise SkipSample("source unreadable", key="k1")
        return None if i == 3 else FACTORY(i)

    manifest = write_store(tmp_path, factory, 5, ShardConfig(max_count=4))
    assert manifest["num_samples"] == 3 and manifest["num_dropped"] == 2
    plan = plan_store(tmp_path, 5, ShardConfig(max_count=4))
    record = read_group_record(tmp_path, plan, 0)
    assert record is not None and record["drops"] == [{"index": 1, "key": "k1", "reason": "source unreadable"},
                                                      {"index": 3, "key": None, "reason": None}]


def test_incremental_sync_path_writes_the_same_bytes(tmp_path: Path) -> None:
    """Shards larger than `sync_every` are fdatasync'ed in the background while writing; bytes must not change."""
    samples = [encode_members(FACTORY(i)) for i in range(6)]
    outs = []
    for name, sync_every in (("a.tar", 1 << 40), ("b.tar", 4096)):
        writer = TarShardWriter(tmp_path / name, sync_every=sync_every)
        for key, members in samples:
            writer.add(key, members)
        info = writer.commit()
        assert info is not None and info.count == 6 and info.bytes == (tmp_path / name).stat().st_size
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    with tarfile.open(tmp_path / "b.tar") as tf:
        assert len(tf.getmembers()) == 24
    aborted = TarShardWriter(tmp_path / "c.tar", sync_every=4096)
    aborted.add(*samples[0])
    aborted.abort()
    assert not list(tmp_path.glob(".c.tar*")) and not (tmp_path / "c.tar").exists()


def test_long_keys_use_pax_headers_and_offsets_stay_exact(tmp_path: Path) -> None:
    import webdataset as wds

    long_key = "k" * 150  # beyond the 100-byte ustar name field

    def factory(i: int):
        sample = FACTORY(i)
        sample["__key__"] = f"{long_key}{i}"
        return sample

    write_store(tmp_path, factory, 3, ShardConfig())
    row = read_index(tmp_path).to_pylist()[1]
    assert row["key"] == f"{long_key}1"
    assert read_member(tmp_path, row, "mix.flac") == FACTORY(1)["mix.flac"]
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False)]
    assert keys == [f"{long_key}{i}" for i in range(3)]


def test_safe_key_keeps_valid_keys_and_maps_unsafe_ids_to_distinct_valid_keys():
    from storage.shards.writer import safe_key, validate_key

    assert safe_key("scene_00012-q03") == "scene_00012-q03"  # valid keys (the demo's) are unchanged: same shard bytes
    ids = ["audioset:aaa_30.000-q00", "fsd50k:my clip.v2-q00", "fsd50k:..dots..scene-q00", "x/../../etc-q00",
           "fsd50k:my_clip_v2-q00", "caf\udce9-q00"]
    keys = [safe_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    for k in keys:
        assert validate_key(k) == k and "/" not in k and ".." not in k
    assert safe_key(ids[0]) == keys[0]  # deterministic
