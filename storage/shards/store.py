"""Resumable, idempotent shard store: `write_store(out_dir, sample_factory, num, cfg)`.

Samples are numbered 0..num-1 and rendered by a deterministic `sample_factory(i) -> dict | None` (None drops the
sample, e.g. when a filter rejects it). Shard boundaries are planned from numbers, not from what happens to be
rendered: group j holds samples [j*max_count, (j+1)*max_count) and is written as `<prefix>-<j:06d>.tar`; if
`max_bytes` would be exceeded the group continues in `<prefix>-<j:06d>_<p:02d>.tar` (p = 1, 2, ...). The cut points
depend only on the encoded sizes, so the same inputs always give the same file names and bytes.

Commit protocol per shard: tar under a temp name -> fsync -> rename -> `index/<shard>.parquet` (atomic). A shard
counts only when its index exists. When every shard of a group is committed a group marker
`index/groups/<prefix>-<j:06d>.json` is written, and a re-run skips the group without rendering its samples. A
killed run leaves at most temp files and possibly a published tar without index; the next run removes both and
continues from the end of the last committed shard. `manifest.json` and `_SUCCESS` close a complete store.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pyarrow.parquet as pq

from storage.atomic import atomic_write_text
from storage.shards.config import ShardConfig
from storage.shards.index import (ShardIndexError, index_dir, index_path, index_row, read_index,
                                  read_sample_range, write_shard_index)
from storage.shards.writer import TMP_SUFFIX, SampleError, ShardInfo, TarShardWriter, encode_members

log = logging.getLogger("stemforge.shards")

STORE_FORMAT = "stemforge-shards/1"
PLAN_FILE = "store.json"
MANIFEST_FILE = "manifest.json"
SUCCESS_FILE = "_SUCCESS"
GROUPS_DIR = "groups"
LOCK_FILE = ".writer.lock"

SampleFactory = Callable[[int], "Mapping[str, Any] | None"]


class StoreError(RuntimeError):
    """A store that cannot be written or resumed (plan mismatch, foreign files); names the directory."""


@dataclass(frozen=True)
class StorePlan:
    """Everything that fixes which sample lands in which file; a resumed run must match it exactly."""

    num: int
    max_count: int
    max_bytes: int
    prefix: str
    mtime: int
    meta: dict[str, Any]

    @classmethod
    def from_config(cls, num: int, cfg: ShardConfig, meta: Mapping[str, Any] | None = None) -> "StorePlan":
        if num < 0:
            raise ValueError(f"num must be >= 0, got {num}")
        return cls(num, cfg.max_count, cfg.max_bytes, cfg.prefix, cfg.mtime, json.loads(json.dumps(dict(meta or {}))))

    @property
    def groups(self) -> int:
        return math.ceil(self.num / self.max_count)

    def group_range(self, j: int) -> tuple[int, int]:
        return j * self.max_count, min((j + 1) * self.max_count, self.num)

    def group_name(self, j: int) -> str:
        return f"{self.prefix}-{j:06d}"

    def shard_name(self, j: int, part: int) -> str:
        return f"{self.group_name(j)}.tar" if part == 0 else f"{self.group_name(j)}_{part:02d}.tar"

    def to_json(self) -> dict[str, Any]:
        return {"format": STORE_FORMAT, **asdict(self)}


def _group_marker(out_dir: Path, plan: StorePlan, j: int) -> Path:
    return index_dir(out_dir) / GROUPS_DIR / f"{plan.group_name(j)}.json"


def remove_partials(out_dir: str | Path) -> int:
    """Delete temp files left by a killed writer (shards and index parts). Returns how many were removed."""
    out_dir = Path(out_dir)
    removed = 0
    for d in (out_dir, index_dir(out_dir), index_dir(out_dir) / GROUPS_DIR):
        if d.is_dir():
            for tmp in d.glob(f".*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("%s: removed %d partial file(s) from an interrupted run", out_dir, removed)
    return removed


def _committed_parts(out_dir: Path, plan: StorePlan, j: int) -> tuple[list[dict[str, Any]], int]:
    """Committed shards of group j in order, and the next sample number to render.

    A shard counts only when its tar and its index part both exist and the parts chain without gaps. Everything
    else of this group (a tar published just before a kill, before its index; files after a gap) is removed, so
    the group continues exactly where the uninterrupted run would have.
    """
    first, end = plan.group_range(j)
    parts: list[dict[str, Any]] = []
    nxt = first
    part = 0
    while True:
        name = plan.shard_name(j, part)
        tar, idx = out_dir / name, index_path(out_dir, name)
        if not (tar.exists() and idx.exists()):
            break
        try:
            rng = read_sample_range(idx)
        except ShardIndexError as exc:
            log.warning("%s; rewriting from there", exc)
            break
        if rng[0] != nxt or rng[1] > end:
            raise StoreError(f"{idx}: covers samples {list(rng)} but the plan expects a shard starting at {nxt} "
                             f"within [{first}, {end}); the store was written with a different plan")
        parts.append({"name": name, "range": list(rng), "count": pq.read_metadata(idx).num_rows,
                      "bytes": tar.stat().st_size})
        nxt = rng[1]
        part += 1
    keep = {p["name"] for p in parts}
    group = plan.group_name(j)
    idx_dir = index_dir(out_dir)
    leftovers = [*out_dir.glob(f"{group}.tar"), *out_dir.glob(f"{group}_*.tar"),
                 *idx_dir.glob(f"{group}.parquet"), *idx_dir.glob(f"{group}_*.parquet")]
    for d in (out_dir, idx_dir):  # temp files of this group from a killed writer
        for tmp in [*d.glob(f".{group}.*{TMP_SUFFIX}"), *d.glob(f".{group}_*{TMP_SUFFIX}")]:
            tmp.unlink(missing_ok=True)
    for path in leftovers:
        if f"{path.stem}.tar" not in keep:
            log.info("%s: not committed by the interrupted run; removing", path)
            path.unlink(missing_ok=True)
    return parts, nxt


def _json_meta(value: Any, text: str | None, key: str) -> Mapping[str, Any] | None:
    """The sample's metadata for its index row, whether the producer passed a dict or pre-encoded JSON."""
    if isinstance(value, Mapping):
        return value
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise SampleError(key, f"member 'json' is not valid JSON: {exc}") from exc
    return meta if isinstance(meta, Mapping) else None


class Committer:
    """Publishes finished shards on one background thread, in submission order, while the caller renders on.

    Why: fsyncing a shard and writing its index take disk latency that a plain writer never pays; overlapping it
    with rendering the next shard hides most of it. Order is preserved (shard, then its index, then the group
    marker), so the crash-safety protocol is unchanged. `close()` waits for everything and re-raises the first error.
    """

    def __init__(self, max_pending: int = 4) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-commit")
        self._futures: list[cf.Future] = []
        self.max_pending = max_pending  # bounds open temp files and memory when rendering outpaces the disk

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        while self._futures and (self._futures[0].done() or len(self._futures) >= self.max_pending):
            self._futures.pop(0).result()  # surfaces a failed commit early
        self._futures.append(self._pool.submit(fn, *args))

    def close(self) -> None:
        try:
            for fut in self._futures:
                fut.result()
        finally:
            self._futures = []
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "Committer":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # The caller already failed: let pending (complete) shards land, but keep the original error.
        try:
            self.close()
        except Exception as secondary:  # noqa: BLE001
            log.error("a background shard commit also failed: %s", secondary)


def _publish(out_dir: Path, writer: TarShardWriter, rows: list[dict[str, Any]], sample_range: tuple[int, int]) -> None:
    """Commit one shard: tar (fsync + rename) first, then its index part, which marks it committed."""
    try:
        info: ShardInfo | None = writer.commit()
    except BaseException:
        writer.abort()
        raise
    if info is not None:
        write_shard_index(out_dir, info.name, rows, sample_range)


def write_group(out_dir: str | Path, plan: StorePlan, j: int, sample_factory: SampleFactory, *, fsync: bool = True,
                progress: Callable[[int], None] | None = None, committer: Committer | None = None) -> dict[str, Any]:
    """Write (or finish, or skip) group j. Safe to call again after a crash; one writer per group at a time.

    With a `committer`, shards, index parts and the group marker are published in the background (call
    `committer.close()` before relying on them); without one, everything is on disk when this returns.
    Returns the group record `{"group", "range", "shards": [{"name", "range", "count", "bytes"}], ...}`.
    """
    out_dir = Path(out_dir)
    marker = _group_marker(out_dir, plan, j)
    if marker.exists():
        record = json.loads(marker.read_text())
        record["skipped"] = True
        if progress:
            progress(plan.group_range(j)[1] - plan.group_range(j)[0])
        return record
    first, end = plan.group_range(j)
    parts, nxt = _committed_parts(out_dir, plan, j)
    if progress and nxt > first:
        progress(nxt - first)
    shards: list[dict[str, Any]] = [dict(p) for p in parts]
    writer: TarShardWriter | None = None
    rows: list[dict[str, Any]] = []
    part_first = nxt
    dropped = 0

    def run(fn: Callable[..., Any], *args: Any) -> None:
        if committer is None:
            fn(*args)
        else:
            committer.submit(fn, *args)

    def commit(upto: int) -> None:
        nonlocal writer, rows, part_first
        assert writer is not None and writer.count
        shards.append({"name": writer.final_path.name, "range": [part_first, upto], "count": writer.count,
                       "bytes": writer.final_size()})
        run(_publish, out_dir, writer, rows, (part_first, upto))
        writer, rows, part_first = None, [], upto

    try:
        for i in range(nxt, end):
            sample = sample_factory(i)
            if progress:
                progress(1)
            if sample is None:
                dropped += 1
                continue
            key, members = encode_members(sample)
            json_text = next((data.decode("utf-8") for ext, data in members if ext == "json"), None)
            meta = _json_meta(sample.get("json"), json_text, key)
            if writer is None:
                writer = TarShardWriter(out_dir / plan.shard_name(j, len(shards)), plan.mtime, fsync)
            size = writer.encoded_size(key, members)
            if writer.count and writer.final_size(size) > plan.max_bytes:
                commit(i)
                writer = TarShardWriter(out_dir / plan.shard_name(j, len(shards)), plan.mtime, fsync)
            elif not writer.count and writer.final_size(size) > plan.max_bytes:
                log.warning("sample %s alone makes a %d-byte tar > max_bytes=%d; it gets a shard of its own", key,
                            writer.final_size(size), plan.max_bytes)
            span = writer.add(key, members)
            rows.append(index_row(span, writer.final_path.name, i, meta, json_text))
        if writer is not None and writer.count:
            commit(end)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    record = {"group": plan.group_name(j), "range": [first, end], "shards": shards, "dropped_in_run": dropped}
    run(atomic_write_text, marker, json.dumps(record, sort_keys=True))
    return record


def _check_plan(out_dir: Path, plan: StorePlan) -> None:
    path = out_dir / PLAN_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError as exc:
            raise StoreError(f"{path}: unreadable store plan ({exc}); remove the directory or choose another") from exc
        if old != plan.to_json():
            diff = sorted(k for k in set(old) | set(plan.to_json()) if old.get(k) != plan.to_json().get(k))
            raise StoreError(f"{out_dir}: existing store was planned with different {', '.join(diff)}; "
                             "resuming would mix two datasets (use a new output directory)")
    else:
        foreign = [p.name for p in out_dir.glob("*.tar")]
        if foreign:
            raise StoreError(f"{out_dir}: contains {len(foreign)} tar file(s) but no {PLAN_FILE}; "
                             "refusing to write a store over foreign shards")
        atomic_write_text(path, json.dumps(plan.to_json(), sort_keys=True, indent=1))


def _write_manifest(out_dir: Path, plan: StorePlan, records: list[dict[str, Any]]) -> dict[str, Any]:
    shards = [s for r in records for s in r["shards"]]
    total = 0
    hours = 0.0
    if shards:
        table = read_index(out_dir, columns=["shard", "duration_s"])
        total = table.num_rows
        hours = float(sum(d for d in table.column("duration_s").to_pylist() if d is not None)) / 3600.0
        counts: dict[str, int] = {}
        for s in table.column("shard").to_pylist():
            counts[s] = counts.get(s, 0) + 1
        for s in shards:
            s["count"] = counts.get(s["name"], 0)
    plan_hash = hashlib.sha256(json.dumps(plan.to_json(), sort_keys=True).encode()).hexdigest()[:16]
    manifest = {
        "format": STORE_FORMAT,
        "plan": plan.to_json(),
        "plan_hash": plan_hash,
        "num_requested": plan.num,
        "num_samples": total,
        "num_dropped": plan.num - total,
        "num_shards": len(shards),
        "hours": hours,
        "shards": shards,
    }
    atomic_write_text(out_dir / MANIFEST_FILE, json.dumps(manifest, sort_keys=True, indent=1))
    atomic_write_text(out_dir / SUCCESS_FILE, plan_hash + "\n")
    return manifest


def is_complete(out_dir: str | Path) -> bool:
    return (Path(out_dir) / SUCCESS_FILE).exists() and (Path(out_dir) / MANIFEST_FILE).exists()


def write_store(out_dir: str | Path, sample_factory: SampleFactory, num: int, cfg: ShardConfig | None = None, *,
                meta: Mapping[str, Any] | None = None, workers: int = 1,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write samples 0..num-1 into a shard store at `out_dir`, resuming a previous partial run; returns the manifest.

    `meta` (e.g. the producing config's hash and seed) is part of the plan: resuming with different meta, counts or
    limits is refused instead of silently mixing datasets. `workers > 1` renders groups in parallel processes (the
    factory must then be picklable). A complete store is returned as is (idempotent).
    """
    cfg = cfg or ShardConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        return _write_store_locked(out_dir, sample_factory, num, cfg, meta, workers, progress)


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One writing process per store: two writers on one directory would remove each other's temp files.
    An flock dies with its process, so a killed run never blocks the resume."""
    with open(out_dir / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{out_dir}: another process is writing this shard store ({out_dir / LOCK_FILE})") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_store_locked(out_dir: Path, sample_factory: SampleFactory, num: int, cfg: ShardConfig,
                        meta: Mapping[str, Any] | None, workers: int,
                        progress: Callable[[int], None] | None) -> dict[str, Any]:
    plan = StorePlan.from_config(num, cfg, meta)
    _check_plan(out_dir, plan)
    if is_complete(out_dir):
        if progress:
            progress(num)
        return json.loads((out_dir / MANIFEST_FILE).read_text())
    remove_partials(out_dir)
    records: list[dict[str, Any]] = []
    if workers <= 1 or plan.groups <= 1:
        with Committer() as committer:
            for j in range(plan.groups):
                records.append(write_group(out_dir, plan, j, sample_factory, fsync=cfg.fsync, progress=progress,
                                           committer=committer))
    else:
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(write_group, out_dir, plan, j, sample_factory, fsync=cfg.fsync)
                       for j in range(plan.groups)]
            for fut in futures:
                record = fut.result()
                records.append(record)
                if progress:
                    first, end = record["range"]
                    progress(end - first)
    skipped = sum(1 for r in records if r.get("skipped"))
    if skipped:
        log.info("%s: %d of %d shard group(s) were already complete", out_dir, skipped, len(records))
    return _write_manifest(out_dir, plan, records)


__all__ = ["Committer", "SampleError", "StoreError", "StorePlan", "is_complete", "remove_partials", "write_group", "write_store"]
