"""The Ray Data reader: one row per sample, decoded like the torch reader, corrupt members skipped on request."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage.shards import ShardConfig, read_index, write_store
from storage.shards.synthetic import SyntheticSamples

FACTORY = SyntheticSamples(seed=31, seconds=0.05)


def test_importing_storage_shards_does_not_import_ray() -> None:
    code = "import sys, storage.shards, storage.shards.reader; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def ray_session():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 * 1024,
             configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_dataset_reads_every_sample_and_skips_corrupt_members(ray_session, tmp_path: Path) -> None:
    from storage.shards.ray_reader import read_shards_ray

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
