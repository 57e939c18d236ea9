"""Write shard stores from many writers: one Ray task per shard group (or in-process, same code).

Shape of a job: the driver plans each store (`storage.shards.store.plan_store`: plan file, foreign-file checks),
asks which groups are not committed yet (`pending_groups`: group markers) and schedules only those, as tasks of
`engine/ray_tasks.run_tasks`. Each task builds the sample factory *inside its worker* from a serialisable
`FactorySpec` (module path + plain-data kwargs), writes its group through storage's atomic per-group writer
(`write_group`) and returns the group record: shard names, counts and the group's drop records (sample index, key,
reason). Once every task is done the driver merges the records (markers for groups committed by earlier runs) and
writes `manifest.json` + `_SUCCESS` (`finalize_store`).

Why per-group tasks and not a Ray Data `Datasink`: the unit of resumption, of retry and of determinism is the
shard group (its files depend only on its sample numbers), and a group's samples are *rendered* by the same worker
that writes them, so audio never crosses the object store; a Datasink would receive blocks cut by Ray Data (not by
the plan), ship rendered audio from the map workers to the write tasks, and its `on_write_complete` bookkeeping
would duplicate the group markers. A killed worker's task is retried by Ray (`max_retries`); the retry removes only
its own group's temp and uncommitted files and continues from the group's last committed shard, so no key is ever
written twice. Same seed -> byte-identical shards whatever the number of workers or the executor.
"""
from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from engine.ray_tasks import Executor, run_tasks
from storage.shards.config import ShardConfig
from storage.shards.store import (SampleFactory, StorePlan, finalize_store, is_complete, pending_groups, plan_store,
                                  read_group_record, write_group)

log = logging.getLogger("stemforge.shards")


@dataclass(frozen=True)
class FactorySpec:
    """How a worker builds a sample factory: `fn` is `"module:callable"`, called as `fn(**kwargs)`, returning
    `factory(i) -> sample | None` (may raise `storage.shards.store.SkipSample` to drop i with a reason).

    The factory must depend only on i (not on call order or process): that is what makes shards byte-identical
    across worker counts. kwargs are plain data (config sections as dicts, paths as strings)."""

    fn: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> SampleFactory:
        module, _, name = self.fn.partition(":")
        if not module or not name:
            raise ValueError(f"FactorySpec.fn must be 'module:callable', got {self.fn!r}")
        return getattr(importlib.import_module(module), name)(**dict(self.kwargs))

    def cache_key(self) -> str | None:
        """Exact identity for reuse inside one worker; None (never reused) when kwargs are not plain JSON data."""
        try:
            return json.dumps({"fn": self.fn, "kwargs": self.kwargs}, sort_keys=True)
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class StoreJob:
    """One shard store to write: samples 0..num-1 of `factory` into `out_dir` (see `storage.shards.store`)."""

    out_dir: str
    num: int
    factory: FactorySpec
    shards: ShardConfig = field(default_factory=ShardConfig)
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StoreResult:
    """What a written store reports back: the manifest, every drop record (sorted by sample index, including those
    of groups committed by earlier runs) and how many groups this call wrote."""

    out_dir: str
    manifest: dict[str, Any]
    drops: list[dict[str, Any]]
    groups_written: int
    groups_total: int
    seconds: float

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Drops that carry a reason (render failures), as opposed to plain filter rejections."""
        return [d for d in self.drops if d.get("reason")]


_FACTORY_CACHE: dict[str, SampleFactory] = {}  # per worker process


def _factory(spec: FactorySpec) -> SampleFactory:
    """Build the factory in this worker; a worker process that runs several groups of the same spec reuses it
    (warm clip cache, planner already past earlier units), which is safe because a factory depends only on i."""
    key = spec.cache_key()
    if key is None:
        return spec.build()
    if key not in _FACTORY_CACHE:
        _FACTORY_CACHE.clear()  # one spec at a time per worker: bounded memory
        _FACTORY_CACHE[key] = spec.build()
    return _FACTORY_CACHE[key]


def _group_task(shared: list[tuple[str, StorePlan, FactorySpec, bool]], item: tuple[int, int]) -> dict[str, Any]:
    """Task body: write group j of store k; returns the group record (small: names, counts, drops)."""
    k, j = item
    out_dir, plan, spec, fsync = shared[k]
    record = write_group(out_dir, plan, j, _factory(spec), fsync=fsync)
    return {**record, "store": k}


def write_stores(jobs: Sequence[StoreJob], *, executor: Executor = "ray", workers: int | None = None,
                 max_retries: int = 2, progress: Callable[[int], None] | None = None) -> list[StoreResult]:
    """Write (or resume) several stores at once: the pending groups of all of them are one wave of tasks.

    `executor`: `ray` (needs an initialised Ray, see `engine.ray_runtime.ray_session`) or `inprocess` (sequential,
    same files). `workers`: Ray tasks in flight (None = as many as the cluster's CPUs allow). `max_retries`: re-runs
    of a group whose worker died. `progress(n)` advances by samples (skipped groups count as done).
    """
    t0 = time.perf_counter()
    plans = [plan_store(job.out_dir, job.num, job.shards, job.meta) for job in jobs]
    todo: list[tuple[int, int]] = []
    for k, (job, plan) in enumerate(zip(jobs, plans)):
        missing = [] if is_complete(job.out_dir) else pending_groups(job.out_dir, plan)
        todo.extend((k, j) for j in missing)
        done = job.num - sum(plan.group_range(j)[1] - plan.group_range(j)[0] for j in missing)
        if progress and done:
            progress(done)
        if missing and len(missing) < plan.groups:
            log.info("%s: %d of %d shard group(s) already committed; writing the other %d", job.out_dir,
                     plan.groups - len(missing), plan.groups, len(missing))
    shared = [(str(Path(job.out_dir).absolute()), plan, job.factory, job.shards.fsync) for job, plan in zip(jobs, plans)]
    records: dict[tuple[int, str], dict[str, Any]] = {}

    def finished(_: int, record: dict[str, Any]) -> None:
        records[(record["store"], record["group"])] = record
        if progress:
            first, end = record["range"]
            progress(end - first)

    run_tasks(_group_task, todo, shared=shared, executor=executor, workers=workers, max_retries=max_retries,
              name="shard_group", on_result=finished)
    results = []
    for k, (job, plan) in enumerate(zip(jobs, plans)):
        manifest = finalize_store(job.out_dir, plan)
        drops: list[dict[str, Any]] = []
        for j in range(plan.groups):
            record = records.get((k, plan.group_name(j))) or read_group_record(job.out_dir, plan, j) or {}
            drops.extend(record.get("drops", []))
        written = sum(1 for (s, _g), r in records.items() if s == k and not r.get("skipped"))
        results.append(StoreResult(str(job.out_dir), manifest, drops, written, plan.groups,
                                   round(time.perf_counter() - t0, 3)))
    return results


def write_store_job(job: StoreJob, *, executor: Executor = "ray", workers: int | None = None, max_retries: int = 2,
                    progress: Callable[[int], None] | None = None) -> StoreResult:
    """`write_stores` for one store."""
    return write_stores([job], executor=executor, workers=workers, max_retries=max_retries, progress=progress)[0]


# -- factory specs other steps use -------------------------------------------------------------------------------

def mix_factory_spec(mixing: Any, seed: int, audio: Any, *, sources: str | Path | None = None,
                     stems_dir: str | Path | None = None, recipe: str | None = None,
                     scenes: str | Path | None = None) -> FactorySpec:
    """Synthetic mixing (`pipelines.mixing.job.mix_factory`) from the `mixing` and `audio` config sections."""
    return FactorySpec("pipelines.mixing.job:mix_factory", {
        "mixing": mixing.model_dump(mode="json"), "seed": int(seed), "audio": audio.model_dump(mode="json"),
        "sources": None if sources is None else str(sources), "stems_dir": None if stems_dir is None else str(stems_dir),
        "recipe": recipe, "scenes": None if scenes is None else str(scenes)})


def tier_factory(rows: Sequence[Mapping[str, Any]], tier: str, thresholds: Mapping[str, Any],
                 versions: Mapping[str, Any], config_hash: str, code_version: str,
                 audio: Mapping[str, Any]) -> Callable[[int], dict[str, Any]]:
    """Tier sample i = kept candidate `rows[i]` (`pipelines.training_data.tier_sample`), audio decoded in the
    worker: the track from the row's `target_flac` bytes (the filter step's kept audio), the scene from its
    `scene_path`. The list order is the sample order."""
    from pipelines.training_data import tier_sample
    from storage.audio import AudioConfig, decode_audio, encode_audio, load_audio

    audio_cfg = AudioConfig.model_validate(dict(audio))

    def factory(i: int) -> dict[str, Any]:
        row = dict(rows[i])
        row["target"], _ = decode_audio(row.pop("target_flac"))
        row["mixture"] = load_audio(row["scene_path"], audio_cfg)
        return tier_sample(row, tier, thresholds, versions, config_hash, code_version, encode_audio)

    return factory


def tier_factory_spec(rows: Sequence[Mapping[str, Any]], tier: str, thresholds: Mapping[str, Any],
                      versions: Mapping[str, Any], config_hash: str, code_version: str, audio: Any) -> FactorySpec:
    """`FactorySpec` of `tier_factory` (for `engine_steps.write_tier_store`). The rows carry FLAC bytes, so the spec is
    not JSON: it travels pickled, once per run through the object store."""
    return FactorySpec("engine.shard_jobs:tier_factory", {
        "rows": [dict(r) for r in rows], "tier": tier, "thresholds": dict(thresholds), "versions": dict(versions),
        "config_hash": config_hash, "code_version": code_version, "audio": audio.model_dump(mode="json")})
