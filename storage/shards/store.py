"""Resumable, idempotent shard store written by many writers: `plan_store` -> `write_group` per group -> `finalize_store`.

Samples are numbered 0..num-1 and rendered by a deterministic `sample_factory(i) -> dict | None` (None drops the
sample, e.g. when a filter rejects it; raising `SkipSample` drops it with a reason that is kept). Shard boundaries
are planned from numbers, not from what happens to be rendered: group j holds samples [j*max_count,
(j+1)*max_count) and is written as `<prefix>-<j:06d>.tar`; if `max_bytes` would be exceeded the group continues in
`<prefix>-<j:06d>_<p:02d>.tar` (p = 1, 2, ...). The cut points depend only on the encoded sizes, so the same inputs
always give the same file names and bytes, whichever process writes which group.

A shard group is the unit of work: groups never share a file, so different processes (Ray tasks, see
`engine/shard_jobs.py`) write different groups of one store at the same time. Each group is guarded by its own lock
file (a second writer of the *same* group is refused) and a writer only ever removes files of its own group.

Commit protocol per shard: tar under a temp name -> fsync -> rename -> `index/<shard>.parquet` (atomic). A shard
counts only when its index exists. When every shard of a group is committed a group marker
`index/groups/<prefix>-<j:06d>.json` is written (with the group's drop records), and a re-run skips the group
without rendering its samples, unless one of its shards has gone missing. A killed writer leaves at most temp files
and possibly a published tar without index; the next writer of that group removes both and continues from the end
of the last committed shard. `finalize_store` writes `manifest.json` and `_SUCCESS` once every group is committed.
"""
from __future__ import annotations

import concurrent.futures as cf
import fcntl
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pyarrow.parquet as pq

from storage.atomic import atomic_write_text, fsync_dir
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
LOCKS_DIR = ".locks"

SampleFactory = Callable[[int], "Mapping[str, Any] | None"]


class StoreError(RuntimeError):
    """A store that cannot be written or resumed (plan mismatch, foreign files, missing groups); names the directory."""


class SkipSample(Exception):
    """Raised by a sample factory to drop sample i *with a reason*: the writer records `{index, key, reason}` in
    the group's record and marker (so a report can list every dropped tuple, whichever process rendered it)."""

    def __init__(self, reason: str, key: str | None = None):
        self.reason = str(reason)
        self.key = key
        super().__init__(self.reason if key is None else f"{key}: {self.reason}")


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


class _GroupLock:
    """An flock on `.locks/<group>.lock`: one writer per group (two writers of one group would remove each other's
    temp files). Groups of one store are written concurrently; an flock dies with its process, so a killed or lost
    worker never blocks the retry."""

    def __init__(self, out_dir: Path, group: str):
        self.path = out_dir / LOCKS_DIR / f"{group}.lock"
        self.group = group
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path.parent.parent}: another process is writing shard group {self.group} "
                             f"({self.path})") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _group_temps(out_dir: Path, group: str) -> list[Path]:
    """Temp files of this group only (shards, index parts, marker): never another writer's."""
    found: list[Path] = []
    for d in (out_dir, index_dir(out_dir), index_dir(out_dir) / GROUPS_DIR):
        if d.is_dir():
            found.extend([*d.glob(f".{group}.*{TMP_SUFFIX}"), *d.glob(f".{group}_*{TMP_SUFFIX}")])
    return found


def _group_files(out_dir: Path, group: str) -> list[Path]:
    """Final-named files of this group: its tars and their index parts."""
    idx_dir = index_dir(out_dir)
    return [*out_dir.glob(f"{group}.tar"), *out_dir.glob(f"{group}_*.tar"),
            *idx_dir.glob(f"{group}.parquet"), *idx_dir.glob(f"{group}_*.parquet")]


def _remove_group_files(out_dir: Path, group: str) -> None:
    for path in _group_files(out_dir, group):
        path.unlink(missing_ok=True)


def _committed_parts(out_dir: Path, plan: StorePlan, j: int) -> tuple[list[dict[str, Any]], int]:
    """Committed shards of group j in order, and the next sample number to render.

    A shard counts only when its tar and its index part both exist and the parts chain without gaps. Everything
    else of this group (temp files of a killed writer, a tar published just before a kill but before its index,
    files after a gap) is removed, so the group continues exactly where the uninterrupted run would have.
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
    leftovers = _group_files(out_dir, group)
    temps = _group_temps(out_dir, group)
    for tmp in temps:
        tmp.unlink(missing_ok=True)
    if temps:
        log.info("%s: removed %d partial file(s) of group %s from an interrupted writer", out_dir, len(temps), group)
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
    marker, then the group's lock release), so the crash-safety protocol is unchanged. `close()` waits for
    everything and re-raises the first error.
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
    """Commit one shard: tar (fsync + rename) first, then its index part, which marks it committed.

    If the index part cannot be written (a full disk, say) the tar is withdrawn again, so a failed run leaves no
    shard under a final name that its index does not vouch for (a kill between the two steps still can; the next
    writer of the group removes that one)."""
    try:
        info: ShardInfo | None = writer.commit()
    except BaseException:
        writer.abort()
        raise
    if info is not None:
        try:
            write_shard_index(out_dir, info.name, rows, sample_range)
        except BaseException:
            info.path.unlink(missing_ok=True)
            fsync_dir(out_dir)
            raise


def read_group_record(out_dir: str | Path, plan: StorePlan, j: int) -> dict[str, Any] | None:
    """Group j's record if its marker exists and every shard it lists is still there at its recorded size."""
    out_dir = Path(out_dir)
    marker = _group_marker(out_dir, plan, j)
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    for shard in record.get("shards", []):
        tar = out_dir / shard["name"]
        try:
            intact = tar.stat().st_size == shard["bytes"] and index_path(out_dir, shard["name"]).exists()
        except OSError:
            intact = False
        if not intact:
            return None
    return record


def pending_groups(out_dir: str | Path, plan: StorePlan) -> list[int]:
    """Groups without an intact commit (no marker, or a marker whose shards went missing): what a run must write."""
    out_dir = Path(out_dir)
    return [j for j in range(plan.groups) if read_group_record(out_dir, plan, j) is None]


def write_group(out_dir: str | Path, plan: StorePlan, j: int, sample_factory: SampleFactory, *, fsync: bool = True,
                progress: Callable[[int], None] | None = None, committer: Committer | None = None) -> dict[str, Any]:
    """Write (or finish, or skip) group j; safe to call again after a crash, and concurrently for other groups.

    With a `committer`, shards, index parts, the group marker and the group lock's release are published in the
    background (call `committer.close()` before relying on them); without one, everything is on disk when this
    returns. Returns the group record `{"group", "range", "shards": [{"name", "range", "count", "bytes"}],
    "drops": [{"index", "key", "reason"}], "dropped_in_run", "skipped"}`.
    """
    out_dir = Path(out_dir)
    first, end = plan.group_range(j)
    lock = _GroupLock(out_dir, plan.group_name(j))
    lock.acquire()

    def run(fn: Callable[..., Any], *args: Any) -> None:
        if committer is None:
            fn(*args)
        else:
            committer.submit(fn, *args)

    try:
        record = read_group_record(out_dir, plan, j)
        if record is not None:
            record["skipped"] = True
            if progress:
                progress(end - first)
            return record
        marker = _group_marker(out_dir, plan, j)
        if marker.exists():  # committed once, but a shard went missing or changed size: redo the whole group
            log.warning("%s: a shard of group %s is missing or changed; rewriting the group", out_dir, plan.group_name(j))
            marker.unlink()
            _remove_group_files(out_dir, plan.group_name(j))
        record = _render_group(out_dir, plan, j, sample_factory, fsync, progress, run)
        run(atomic_write_text, marker, json.dumps(record, sort_keys=True))
        record["skipped"] = False
        return record
    finally:
        try:
            run(lock.release)  # after the marker: the next writer of this group sees it committed
        except BaseException:
            lock.release()  # the committer refused new work (an earlier commit failed): release now
            raise


def _render_group(out_dir: Path, plan: StorePlan, j: int, sample_factory: SampleFactory, fsync: bool,
                  progress: Callable[[int], None] | None, run: Callable[..., None]) -> dict[str, Any]:
    first, end = plan.group_range(j)
    parts, nxt = _committed_parts(out_dir, plan, j)
    if progress and nxt > first:
        progress(nxt - first)
    shards: list[dict[str, Any]] = [dict(p) for p in parts]
    writer: TarShardWriter | None = None
    rows: list[dict[str, Any]] = []
    part_first = nxt
    drops: list[dict[str, Any]] = []

    def commit(upto: int) -> None:
        nonlocal writer, rows, part_first
        assert writer is not None and writer.count
        shards.append({"name": writer.final_path.name, "range": [part_first, upto], "count": writer.count,
                       "bytes": writer.final_size()})
        run(_publish, out_dir, writer, rows, (part_first, upto))
        writer, rows, part_first = None, [], upto

    try:
        for i in range(nxt, end):
            try:
                sample = sample_factory(i)
            except SkipSample as skip:
                drops.append({"index": i, "key": skip.key, "reason": skip.reason})
                sample = None
            else:
                if sample is None:
                    drops.append({"index": i, "key": None, "reason": None})
            if progress:
                progress(1)
            if sample is None:
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
    return {"group": plan.group_name(j), "range": [first, end], "shards": shards, "drops": drops,
            "dropped_in_run": len(drops)}


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


def is_complete(out_dir: str | Path) -> bool:
    return (Path(out_dir) / SUCCESS_FILE).exists() and (Path(out_dir) / MANIFEST_FILE).exists()


def _store_temps(out_dir: Path) -> list[Path]:
    return [p for name in (PLAN_FILE, MANIFEST_FILE, SUCCESS_FILE) for p in out_dir.glob(f".{name}.*{TMP_SUFFIX}")]


def plan_store(out_dir: str | Path, num: int, cfg: ShardConfig | None = None,
               meta: Mapping[str, Any] | None = None) -> StorePlan:
    """Create or re-open the store at `out_dir` for samples 0..num-1 and return its plan (the driver calls this once).

    `meta` (e.g. the producing config's hash and seed) is part of the plan: re-opening with different meta, counts
    or limits is refused instead of silently mixing datasets; so is a directory holding tars but no plan. A store
    marked complete whose shards went missing loses its `_SUCCESS` so the missing groups are written again.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = StorePlan.from_config(num, cfg or ShardConfig(), meta)
    _check_plan(out_dir, plan)
    for tmp in _store_temps(out_dir):
        tmp.unlink(missing_ok=True)
    if is_complete(out_dir):
        missing = pending_groups(out_dir, plan)
        if missing:
            log.warning("%s: marked complete but %d shard group(s) are missing or changed (%s); writing them again",
                        out_dir, len(missing), ", ".join(plan.group_name(j) for j in missing[:5]))
            (out_dir / SUCCESS_FILE).unlink(missing_ok=True)
    return plan


def finalize_store(out_dir: str | Path, plan: StorePlan) -> dict[str, Any]:
    """Write `manifest.json` and then `_SUCCESS` once every group is committed; returns the manifest.

    Idempotent: a complete store's manifest is returned without rewriting anything. Raises `StoreError` naming the
    groups that are not committed yet (their writers failed or have not run).
    """
    out_dir = Path(out_dir)
    records = [read_group_record(out_dir, plan, j) for j in range(plan.groups)]
    missing = [plan.group_name(j) for j, r in enumerate(records) if r is None]
    if missing:
        raise StoreError(f"{out_dir}: {len(missing)} of {plan.groups} shard group(s) not committed: "
                         f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    if is_complete(out_dir):
        return json.loads((out_dir / MANIFEST_FILE).read_text())
    return _write_manifest(out_dir, plan, [r for r in records if r is not None])


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


def write_store(out_dir: str | Path, sample_factory: SampleFactory, num: int, cfg: ShardConfig | None = None, *,
                meta: Mapping[str, Any] | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Sequential, in-process convenience: `plan_store`, `write_group` for every pending group, `finalize_store`.

    The same steps `engine/shard_jobs.py` runs across Ray tasks; use that for parallel writing. Resumes a partial
    store; a complete store is returned as is (idempotent). Returns the manifest.
    """
    cfg = cfg or ShardConfig()
    plan = plan_store(out_dir, num, cfg, meta)
    if not is_complete(out_dir):
        with Committer() as committer:
            for j in range(plan.groups):
                write_group(out_dir, plan, j, sample_factory, fsync=cfg.fsync, progress=progress, committer=committer)
    elif progress:
        progress(num)
    return finalize_store(out_dir, plan)


__all__ = ["Committer", "SampleError", "SkipSample", "StoreError", "StorePlan", "finalize_store",
           "is_complete", "pending_groups", "plan_store", "read_group_record", "write_group", "write_store"]
