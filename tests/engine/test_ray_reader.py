"""The Ray Data reader (engine/ray_reader.py): one row per sample, decoded like the torch reader, corrupt members
skipped on request."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from storage.shards import ShardConfig, read_index, write_store
from toy_shards import SyntheticSamples

FACTORY = SyntheticSamples(seed=31, seconds=0.05)


@pytest.mark.timeout(120)
def test_ray_dataset_reads_every_sample_and_skips_corrupt_members(ray_local, tmp_path: Path) -> None:
    from engine.ray_reader import read_shards_ray

    write_store(tmp_path, FACTORY, 9, ShardConfig(max_count=4))
    rows = read_shards_ray(tmp_path).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(FACTORY(i)["__key__"] for i in range(9))
    row = next(r for r in rows if r["__key__"] == FACTORY(4)["__key__"])
    assert row["mix"].dtype == np.float32 and row["mix"].shape == (800,)
    assert json.loads(row["json"])["key"] == row["__key__"]

    bad = read_index(tmp_path).to_pylist()[2]
    i = bad["members"].index(f"{bad['key']}.mix.flac")
    path = tmp_path / bad["shard"]
    data = bytearray(path.read_bytes())
    data[bad["member_offsets"][i]:bad["member_offsets"][i] + 64] = b"\0" * 64
    path.write_bytes(bytes(data))
    kept = read_shards_ray(tmp_path, on_error="skip").take_all()
    assert len(kept) == 8 and bad["key"] not in {r["__key__"] for r in kept}
