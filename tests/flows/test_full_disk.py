"""A full disk is an error naming the file, never a corrupt store; after space is freed the run resumes to the same bytes.

The output directory is a real tmpfs of a few MiB (mounted here; root or CAP_SYS_ADMIN needed, else the tests skip
with the reason), filled with a filler file until only a chosen number of bytes is free, so the disk runs out at a
known point: mid-shard in `stemforge mix`, between a shard and its index part, at the manifest, and while saving a
checkpoint. Each result is compared byte for byte with the same run on the normal disk.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from engine.errors import is_transient
from flows.cli import cli
from storage.errors import DiskFullError
from storage.shards import ShardConfig, write_store
from storage.shards.store import finalize_store, plan_store, write_group
from toy_sources import write_toy_sources

PAGE = 4096  # tmpfs accounts whole pages per file
MIX = ["--recipe", "promptsep", "--num", "20", "--seed", "7", "--quiet", "--set", "mixing.duration_s=1.0",
       "--set", "shards.max_count=8", "--set", "engine.backend=inprocess"]
# what a run writes besides the store itself (a report with timings, the resolved config)
NOT_STORE = {"mix_report.json", "config.resolved.yaml"}


def pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


@contextmanager
def tmpfs(where: Path, size: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs at {where} (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield where
    finally:  # a failing assertion's traceback can still hold a file open there: detach lazily then
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], check=True)


def free_bytes(mount: Path) -> int:
    st = os.statvfs(mount)
    return st.f_bavail * st.f_frsize


def fill_until(mount: Path, free: int) -> Path:
    """Write one more filler file so that exactly `free` bytes (a multiple of the page size) stay free on `mount`."""
    filler = mount / f"filler-{len(list(mount.glob('filler-*')))}.bin"
    left = free_bytes(mount) - free
    assert left >= 0 and free % PAGE == 0
    with open(filler, "wb") as fh:
        while left:
            n = min(left, 1 << 20)
            fh.write(b"\0" * n)
            left -= n
    assert free_bytes(mount) == free
    return filler


def store_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in NOT_STORE and ".locks" not in p.parts and not p.name.startswith("filler-")}


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_sources(tmp_path_factory.mktemp("corpus"), per_class=2, seconds=1.5)


def _mix(corpus: Path, out: Path):
    return CliRunner().invoke(cli, ["mix", "--sources", str(corpus), "--out", str(out), *MIX])


def test_mix_on_a_disk_that_fills_mid_shard_fails_cleanly_and_resumes_to_the_same_bytes(corpus: Path,
                                                                                      tmp_path: Path) -> None:
    ref_dir = tmp_path / "normal"
    ref = _mix(corpus, ref_dir)
    assert ref.exit_code == 0, ref.output
    want = store_files(ref_dir)
    assert sorted(n for n in want if n.endswith(".tar")) == [f"shard-00000{j}.tar" for j in range(3)]
    group0 = ["store.json", "shard-000000.tar", "index/shard-000000.parquet",
              "index/groups/shard-000000.json"]
    # room for everything of group 0 and half of group 1's tar: the disk fills while that tar is being written
    room = sum(pages(len(want[n])) for n in group0) + pages(len(want["shard-000001.tar"]) // 2)

    with tmpfs(tmp_path / "disk", 16 << 20) as disk:
        filler = fill_until(disk, room)
        out = disk / "shards"
        failed = _mix(corpus, out)
        assert failed.exit_code == 1 and isinstance(failed.exception, DiskFullError), failed.output
        assert str(failed.exception).startswith(f"no space left on device writing {out / 'shard-000001.tar'}")
        assert failed.exception.errno == errno.ENOSPC and not is_transient(failed.exception)
        assert temps(out) == []  # the partial shard went with its temp file
        left = store_files(out)
        assert sorted(left) == sorted(group0)  # nothing of group 1 under a final name, no manifest, no _SUCCESS
        assert all(left[n] == want[n] for n in left)  # and what is there is complete and final

        filler.unlink()  # space freed: the same command resumes after group 0
        resumed = _mix(corpus, out)
        assert resumed.exit_code == 0, resumed.output
        report = json.loads((out / "mix_report.json").read_text())
        assert (report["groups_written"], report["groups_total"], report["written"]) == (2, 3, 20)
        assert store_files(out) == want  # byte-identical shards, index parts, markers, manifest and _SUCCESS
        assert temps(out) == []
        verify = CliRunner().invoke(cli, ["shards", "verify", str(out), "--quiet"])
        assert verify.exit_code == 0, verify.output


def _payload(i: int) -> dict[str, object]:
    rng = np.random.default_rng([5, i])
    return {"__key__": f"s{i:04d}", "bin": rng.integers(0, 256, 40_000, dtype=np.uint8).tobytes(),
            "json": {"index": i, "duration_s": 1.0}}


CFG = ShardConfig(max_count=4, prefix="t")


def test_a_shard_whose_index_part_does_not_fit_is_withdrawn_and_the_manifest_waits(tmp_path: Path) -> None:
    """Store level: the disk fills right after a shard's tar (its index part fails) and again at the manifest."""
    write_store(tmp_path / "normal", _payload, 12, CFG)
    want = store_files(tmp_path / "normal")
    with tmpfs(tmp_path / "disk", 4 << 20) as disk:
        out = disk / "store"
        plan = plan_store(out, 12, CFG)
        fill_until(disk, pages(len(want["t-000000.tar"])))  # the tar fits; its index part does not
        with pytest.raises(DiskFullError, match=rf"^no space left on device writing {out}/index/t-000000\.parquet"):
            write_group(out, plan, 0, _payload)
        assert not (out / "t-000000.tar").exists() and temps(out) == []  # no shard its index does not vouch for

        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)  # a bigger disk
        for j in range(plan.groups):
            write_group(out, plan, j, _payload)
        fill_until(disk, 0)
        with pytest.raises(DiskFullError, match=rf"^no space left on device writing {out}/manifest\.json"):
            finalize_store(out, plan)
        assert not (out / "manifest.json").exists() and not (out / "_SUCCESS").exists() and temps(out) == []

        for filler in disk.glob("filler-*"):
            filler.unlink()
        write_store(out, _payload, 12, CFG)
        assert store_files(out) == want


def test_a_checkpoint_save_on_a_full_disk_names_the_checkpoint(tmp_path: Path) -> None:
    """torch's zip writer turns ENOSPC into an opaque RuntimeError; the save still reports the file and leaves no
    partial checkpoint (nor temp file) behind."""
    from separator_data import untrained_checkpoint

    with tmpfs(tmp_path / "disk", 1 << 20) as disk:
        fill_until(disk, 4 * PAGE)
        with pytest.raises(DiskFullError, match=rf"^no space left on device writing {disk}/last\.pt"):
            untrained_checkpoint(disk / "last.pt", width=16)
        assert sorted(p.name for p in disk.iterdir()) == ["filler-0.bin"]


def test_a_full_disk_is_not_retried() -> None:
    """ENOSPC/EDQUOT fail the same way until someone frees space: retrying hides the error and burns the
    retry budget, so the engine's retry policy treats them as permanent (other I/O errors stay transient)."""
    assert not is_transient(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_transient(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = RuntimeError("PytorchStreamWriter failed writing file data/0")
    wrapped.__cause__ = DiskFullError("/runs/x/last.pt")
    assert not is_transient(wrapped)
    assert is_transient(OSError(errno.EIO, "I/O error"))
    from ray.exceptions import RayTaskError

    for inner in (DiskFullError("/runs/x/a.tar"), OSError(errno.ENOSPC, "No space left on device")):
        raised = RayTaskError("shard_group", "Traceback ...", inner)  # a shard-writing Ray task that hit it
        assert not is_transient(raised) and not is_transient(raised.as_instanceof_cause())  # as ray.get raises it
    again = pickle.loads(pickle.dumps(DiskFullError("/runs/x/a.tar")))  # crosses Ray's process boundary intact
    assert isinstance(again, DiskFullError) and again.path == "/runs/x/a.tar" and again.errno == errno.ENOSPC
    assert str(again).startswith("no space left on device writing /runs/x/a.tar; free space")


def _dir_bytes(path: Path) -> int:
    return sum(pages(p.stat().st_size) for p in path.rglob("*") if p.is_file())


def _run_figures(root: Path) -> list[dict]:
    keys = ("iteration", "sdri_db", "si_sdri_db", "natural_sdri_db", "silence_sdr_db", "candidates", "kept_itt",
            "kept_sst", "re_sdr_mean_db", "separator_hash")
    return [{k: it.get(k) for k in keys} for it in json.loads((root / "report.json").read_text())["iterations"]]


def _tars(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


@pytest.mark.timeout(900)
def test_a_whole_run_on_a_disk_that_fills_fails_cleanly_and_resumes_to_the_same_result(tmp_path: Path) -> None:
    """`stemforge run` (tiny preset) whose output directory is a small tmpfs that fills up while the synthetic shard
    stores are written: the run stops with an error naming the file, leaves no temp file and no shard under a final
    name that is not whole; once space is freed the same command completes with the figures and shard bytes of the
    same run on ample space (both at one path: shards record their source paths)."""
    import tarfile

    from storage.shards.inspect import verify_store

    tiny = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    args = ["run", "--config", tiny, "--set", "engine.backend=inprocess", "--set", "engine.final.enabled=false",
            "--set", "engine.review_per_filter=0", "--quiet"]
    with tmpfs(tmp_path / "disk", 400 << 20) as mount:
        out = mount / "runs"
        ref = CliRunner().invoke(cli, [*args, "--out", str(out)], catch_exceptions=False)
        assert ref.exit_code == 0, ref.output
        root = out / "tiny"
        figures, tars = _run_figures(root), _tars(root)
        room = _dir_bytes(root / "corpus") + _dir_bytes(root / "synthetic") // 2  # runs out halfway through synthetic
        subprocess.run(["rm", "-rf", str(root)], check=True)
        filler = fill_until(mount, pages(room) + 64 * PAGE)
        full = subprocess.run([str(Path(os.sys.executable).with_name("stemforge")), *args, "--out", str(out)],
                              capture_output=True, text=True, cwd=str(tmp_path))
        assert full.returncode == 1, full.stderr[-3000:]
        assert "no space left on device writing" in full.stderr and str(root) in full.stderr, full.stderr[-3000:]
        assert temps(root) == []
        for tar in root.rglob("*.tar"):  # whatever is under a final name is whole
            with tarfile.open(tar) as t:
                assert t.getmembers()
        assert not (root / "steps" / "synthetic.json").exists()
        filler.unlink()
        resumed = CliRunner().invoke(cli, [*args, "--out", str(out)], catch_exceptions=False)
        assert resumed.exit_code == 0, resumed.output
        assert _run_figures(root) == figures
        assert _tars(root) == tars
        stores = sorted({p.parent for p in root.rglob("manifest.json") if list(p.parent.glob("*.tar"))})
        assert stores
        for store in stores:
            assert not verify_store(store)["problems"], store
        assert temps(root) == []
