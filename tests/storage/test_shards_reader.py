"""Shard readers: decoding, shuffling, DataLoader worker split, corrupt and truncated shards."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from storage.audio import decode_audio
from storage.shards import ShardConfig, read_index, read_member, write_store
from storage.shards.reader import ShardIterableDataset, ShardReadError, iter_samples, list_shards
from toy_shards import SyntheticSamples

FACTORY = SyntheticSamples(seed=11, seconds=0.05)
NUM = 24


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store")
    write_store(out, FACTORY, NUM, ShardConfig(max_count=4))
    return out


def _keys(samples) -> list[str]:
    return [s["__key__"] for s in samples]


def test_decodes_flac_to_float32_and_json_to_dict(store: Path) -> None:
    samples = list(iter_samples(store))
    assert _keys(samples) == [FACTORY(i)["__key__"] for i in range(NUM)]
    s = samples[5]
    ref = FACTORY(5)
    assert s["mix"].dtype == np.float32 and s["mix"].shape == (800,)
    np.testing.assert_allclose(s["mix"], decode_audio(ref["mix.flac"])[0])
    np.testing.assert_allclose(s["mix"], s["target"] + s["residual"], atol=1e-5)
    assert s["json"]["key"] == s["__key__"] and s["sample_rate"] == 16000
    assert s["__url__"].endswith("shard-000001.tar")


def test_missing_residual_reads_as_zeros(tmp_path: Path) -> None:
    def no_residual(i: int):
        sample = FACTORY(i)
        del sample["residual.flac"]
        return sample

    write_store(tmp_path, no_residual, 2, ShardConfig())
    s = next(iter(iter_samples(tmp_path)))
    assert s["residual"].shape == s["mix"].shape and not s["residual"].any()


def test_shuffle_is_seeded_and_per_epoch(store: Path) -> None:
    plain = _keys(iter_samples(store))
    a = _keys(iter_samples(store, shuffle=8, seed=1))
    b = _keys(iter_samples(store, shuffle=8, seed=1))
    c = _keys(iter_samples(store, shuffle=8, seed=1, epoch=1))
    assert a == b and a != plain and c != a
    assert sorted(a) == sorted(plain) == sorted(c)
    # Samples from different shards interleave (shuffling across shards, not just within one).
    first_shards = {s["__url__"] for s in list(iter_samples(store, shuffle=8, seed=1))[:6]}
    assert len(first_shards) >= 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_workers_see_each_sample_once_per_epoch(store: Path, num_workers: int) -> None:
    ds = ShardIterableDataset(store, shuffle_buffer=4, seed=5)
    # forkserver: this test process may have run Prefect flows, whose thread-exit hooks make forked workers exit 1
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers,
                                         multiprocessing_context="forkserver" if num_workers else None)
    for epoch in range(2):
        ds.set_epoch(epoch)
        keys = [s["__key__"] for s in loader]
        assert sorted(keys) == sorted(FACTORY(i)["__key__"] for i in range(NUM))
        assert isinstance(next(iter(loader))["mix"], torch.Tensor)


def _copy_store(store: Path, dst: Path) -> list[Path]:
    shutil.copytree(store, dst)
    return [Path(p) for p in list_shards(dst)]


def test_truncated_shard_names_shard_and_member_and_can_be_skipped(store: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    shards = _copy_store(store, tmp_path / "s")
    victim = shards[2]
    rows = [r for r in read_index(tmp_path / "s").to_pylist() if r["shard"] == victim.name]
    cut = rows[1]["member_offsets"][1] + 100  # inside the 2nd sample's 2nd member
    victim.write_bytes(victim.read_bytes()[:cut])
    with pytest.raises(ShardReadError) as err:
        list(iter_samples(tmp_path / "s"))
    assert err.value.shard == str(victim) and err.value.member == rows[1]["members"][1]
    with caplog.at_level(logging.WARNING, logger="stemforge.shards"):
        keys = _keys(iter_samples(tmp_path / "s", on_error="skip"))
    expected = [FACTORY(i)["__key__"] for i in range(NUM)]
    lost = {r["key"] for r in rows[1:]}
    assert keys == [k for k in expected if k not in lost]
    assert victim.name in caplog.text


def test_truncation_on_a_member_boundary_is_detected(store: Path, tmp_path: Path) -> None:
    shards = _copy_store(store, tmp_path / "s")
    victim = shards[0]
    rows = [r for r in read_index(tmp_path / "s").to_pylist() if r["shard"] == victim.name]
    victim.write_bytes(victim.read_bytes()[:rows[2]["offset"]])  # exactly after sample 1
    with pytest.raises(ShardReadError, match="end-of-archive"):
        list(iter_samples(victim))


def test_corrupt_header_mid_shard_is_detected(store: Path, tmp_path: Path) -> None:
    shards = _copy_store(store, tmp_path / "s")
    victim = shards[1]
    rows = [r for r in read_index(tmp_path / "s").to_pylist() if r["shard"] == victim.name]
    data = bytearray(victim.read_bytes())
    data[rows[2]["offset"] + 148:rows[2]["offset"] + 156] = b"XXXXXXXX"  # break the header checksum
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardReadError, match="corrupt tar header") as err:
        list(iter_samples(victim))
    assert err.value.member == f"<header after {rows[1]['members'][-1]}>"
    assert _keys(iter_samples(victim, on_error="skip")) == [r["key"] for r in rows[:1]]


def test_corrupt_flac_member_is_named_and_skipped(store: Path, tmp_path: Path) -> None:
    shards = _copy_store(store, tmp_path / "s")
    row = read_index(tmp_path / "s").to_pylist()[9]
    i = row["members"].index(f"{row['key']}.target.flac")
    data = bytearray(Path(tmp_path / "s" / row["shard"]).read_bytes())
    off = row["member_offsets"][i]
    data[off:off + 64] = b"\xff" * 64  # destroy the FLAC stream header
    (tmp_path / "s" / row["shard"]).write_bytes(bytes(data))
    with pytest.raises(ShardReadError) as err:
        list(iter_samples(shards))
    assert err.value.member == f"{row['key']}.target.flac" and err.value.shard.endswith(row["shard"])
    keys = _keys(iter_samples(shards, on_error="skip"))
    assert row["key"] not in keys and len(keys) == NUM - 1
    with pytest.raises(ValueError, match="on_error"):
        iter_samples(shards, on_error="ignore")  # type: ignore[arg-type]


def test_read_member_seeks_by_index(store: Path) -> None:
    row = read_index(store).to_pylist()[13]
    assert read_member(store, row, "json").startswith(b"{")
    with pytest.raises(KeyError, match="scene.flac"):
        read_member(store, row, "scene.flac")


def test_nodes_and_workers_partition_the_shards(store: Path) -> None:
    from storage.shards.reader import shards_for_epoch

    shards = list_shards(store)
    seen = [s for rank in range(2) for w in range(3)
            for s in shards_for_epoch(shards, True, seed=2, epoch=1, worker=w, num_workers=3, rank=rank, world_size=2)]
    assert sorted(seen) == sorted(shards)
    keys = [k for rank in range(2) for k in _keys(iter_samples(store, shuffle=4, rank=rank, world_size=2))]
    assert sorted(keys) == sorted(FACTORY(i)["__key__"] for i in range(NUM))
    with pytest.raises(ValueError, match="rank"):
        shards_for_epoch(shards, False, 0, 0, rank=2, world_size=2)


def test_package_exports_readers_lazily(store: Path) -> None:
    import storage.shards as shards_pkg

    assert shards_pkg.iter_samples is iter_samples
    with pytest.raises(AttributeError):
        shards_pkg.no_such_name  # noqa: B018


def test_importing_storage_shards_does_not_import_ray() -> None:
    """Ray lives in engine/ only: the store, writer, readers and inspection stay importable without it."""
    import subprocess
    import sys

    code = ("import sys, storage.shards, storage.shards.reader, storage.shards.store, storage.shards.inspect; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
    assert not hasattr(__import__("storage.shards").shards, "read_shards_ray")
