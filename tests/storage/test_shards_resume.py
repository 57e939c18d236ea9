"""Crash safety and resumption: SIGKILL a writer process midway, re-run, and check the store is exactly what an
uninterrupted run with the same seed produces."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds

from storage.shards import ShardConfig, read_index, write_store
from storage.shards.reader import list_shards
from toy_shards import SyntheticSamples

REPO = Path(__file__).resolve().parents[2]
NUM = 40
CFG = ShardConfig(max_count=6, max_bytes=64 * 1024, fsync=True)  # byte cuts happen inside groups too
FACTORY = SyntheticSamples(seed=7, seconds=0.2)

WRITER_SCRIPT = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from storage.shards import ShardConfig, write_store
from toy_shards import SyntheticSamples
cfg = ShardConfig.model_validate({CFG.model_dump()!r})
write_store(sys.argv[1], SyntheticSamples(seed=7, seconds=0.2, delay_s=0.08), {NUM}, cfg)
"""


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.tar"))}


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


def _kill_midway(out: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            finals = [p for p in out.glob("*.tar")] if out.exists() else []
            if len(finals) >= 3 and list(out.glob(".*.tmp")):
                break
            if proc.poll() is not None:
                pytest.fail(f"writer finished before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(0.01)
        else:
            pytest.fail("writer made no progress within 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_killed_writer_resumes_to_identical_complete_store(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    write_store(reference, FACTORY, NUM, CFG)

    out = tmp_path / "killed"
    _kill_midway(out)
    assert not (out / "_SUCCESS").exists()
    assert list(out.glob(".*.tmp")), "the kill should have caught a shard in flight"
    # Every tar under a final name is complete even right after the kill.
    for shard in out.glob("*.tar"):
        with tarfile.open(shard) as tf:
            assert tf.getmembers()
    committed_before = {p.name for p in (out / "index").glob("*.parquet")}
    assert committed_before

    rendered: list[int] = []

    def counting_factory(i: int):
        rendered.append(i)
        return FACTORY(i)

    manifest = write_store(out, counting_factory, NUM, CFG)

    # Committed shards were not rendered again.
    index = read_index(out)
    done_before = {i for i, s in zip(index.column("sample_index").to_pylist(), index.column("shard").to_pylist())
                   if s.replace(".tar", ".parquet") in committed_before}
    assert done_before and not done_before & set(rendered)
    assert len(rendered) < NUM

    assert not _temps(out)
    assert (out / "_SUCCESS").exists() and manifest["num_samples"] == NUM
    assert _tree_bytes(out) == _tree_bytes(reference)  # byte-identical to the uninterrupted run

    keys_wds = Counter(s["__key__"] for s in wds.WebDataset(list_shards(out), shardshuffle=False))
    keys_tar: Counter[str] = Counter()
    for shard in list_shards(out):
        with tarfile.open(shard) as tf:
            names = [m.name for m in tf.getmembers()]
        keys_tar.update({n.split(".", 1)[0] for n in names})
    expected = {FACTORY(i)["__key__"] for i in range(NUM)}
    assert set(keys_wds) == expected and set(keys_wds.values()) == {1}
    assert set(keys_tar) == expected and set(keys_tar.values()) == {1}
    assert sorted(index.column("key").to_pylist()) == sorted(expected)


def test_rerun_of_complete_store_is_a_noop_and_plan_changes_are_refused(tmp_path: Path) -> None:
    from storage.shards import StoreError

    write_store(tmp_path, FACTORY, 8, CFG)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    calls: list[int] = []
    write_store(tmp_path, lambda i: calls.append(i) or FACTORY(i), 8, CFG)
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before
    with pytest.raises(StoreError, match="max_count"):
        write_store(tmp_path, FACTORY, 8, CFG.model_copy(update={"max_count": 3}))
    with pytest.raises(StoreError, match="num"):
        write_store(tmp_path, FACTORY, 9, CFG)


def test_tar_published_without_index_is_rewritten(tmp_path: Path) -> None:
    """A kill between the shard rename and its index write leaves a complete tar that is not committed."""
    write_store(tmp_path / "ref", FACTORY, 12, CFG)
    out = tmp_path / "out"
    write_store(out, FACTORY, 12, CFG)
    victim = sorted((out / "index").glob("*.parquet"))[-1]
    victim.unlink()
    (out / "_SUCCESS").unlink()
    for marker in (out / "index" / "groups").glob("*.json"):
        marker.unlink()
    os.utime(out / victim.name.replace(".parquet", ".tar"), ns=(0, 0))
    write_store(out, FACTORY, 12, CFG)
    assert (out / "_SUCCESS").exists()
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "ref")
    assert (out / victim.name.replace(".parquet", ".tar")).stat().st_mtime_ns != 0  # rewritten, not trusted


def test_second_writer_of_a_group_is_refused_other_groups_proceed(tmp_path: Path) -> None:
    import fcntl

    from storage.shards import StoreError, plan_store, write_group

    plan = plan_store(tmp_path, 12, CFG)
    (tmp_path / ".locks").mkdir()
    with open(tmp_path / ".locks" / "shard-000000.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # another process would hold this; flock is per open file
        with pytest.raises(StoreError, match="another process is writing shard group shard-000000"):
            write_group(tmp_path, plan, 0, FACTORY)
        write_group(tmp_path, plan, 1, FACTORY)  # a different group of the same store is not blocked
    write_store(tmp_path, FACTORY, 12, CFG)
    assert (tmp_path / "_SUCCESS").exists()


def test_deleted_group_is_rewritten_alone_even_in_a_complete_store(tmp_path: Path) -> None:
    write_store(tmp_path / "ref", FACTORY, 18, CFG)
    out = tmp_path / "out"
    write_store(out, FACTORY, 18, CFG)
    victim = out / "shard-000001.tar"
    victim.unlink()  # only the tar: marker, index and _SUCCESS still claim it
    rendered: list[int] = []
    manifest = write_store(out, lambda i: rendered.append(i) or FACTORY(i), 18, CFG)
    assert rendered == list(range(6, 12))
    assert manifest["num_samples"] == 18 and (out / "_SUCCESS").exists()
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "ref")
    truncated = out / "shard-000002.tar"  # a damaged shard (its index still there) is rewritten too
    truncated.write_bytes(truncated.read_bytes()[:1000])
    rendered.clear()
    write_store(out, lambda i: rendered.append(i) or FACTORY(i), 18, CFG)
    assert rendered == list(range(12, 18)) and _tree_bytes(out) == _tree_bytes(tmp_path / "ref")
