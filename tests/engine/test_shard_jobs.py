"""Shard stores from many writers (engine/shard_jobs.py) on a real local Ray: same bytes for any worker count and
executor, a killed worker's group retried without duplicate keys, re-runs that write only missing groups, and
per-sample drop reasons merged from every worker."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from engine.shard_jobs import FactorySpec, StoreJob, write_store_job, write_stores
from storage.shards import ShardConfig, read_index, write_store
from storage.shards.inspect import verify_store
from toy_shards import SyntheticSamples, rendered_indices

CFG = ShardConfig(max_count=4)
NUM = 18  # 5 groups, the last one short


def _tars(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("*.tar"))}


def _spec(**kwargs) -> FactorySpec:
    return FactorySpec("toy_shards:synthetic_factory", {"seed": 5, "seconds": 0.05, **kwargs})


def _counting(log_dir: Path, **kwargs) -> FactorySpec:
    log_dir.mkdir(parents=True, exist_ok=True)
    return FactorySpec("toy_shards:counting_factory", {"log_dir": str(log_dir), "seed": 5, **kwargs})


@pytest.mark.timeout(180)
def test_same_bytes_for_any_worker_count_and_executor(ray_local, tmp_path: Path) -> None:
    write_store(tmp_path / "ref", SyntheticSamples(seed=5, seconds=0.05), NUM, CFG)  # storage's sequential path
    outs = {}
    for name, executor, workers in (("inproc", "inprocess", None), ("ray1", "ray", 1), ("ray2", "ray", 2)):
        ticks: list[int] = []
        result = write_store_job(StoreJob(str(tmp_path / name), NUM, _spec(), CFG), executor=executor,
                                 workers=workers, progress=ticks.append)
        assert result.groups_written == 5 and result.manifest["num_samples"] == NUM and sum(ticks) == NUM
        outs[name] = _tars(tmp_path / name)
    assert len(outs["ray2"]) == 5
    assert outs["inproc"] == outs["ray1"] == outs["ray2"] == _tars(tmp_path / "ref")
    manifests = {n: (tmp_path / n / "manifest.json").read_text() for n in ("ref", "inproc", "ray1", "ray2")}
    assert len(set(manifests.values())) == 1
    again = write_store_job(StoreJob(str(tmp_path / "ray2"), NUM, _spec(), CFG), executor="ray", workers=2)
    assert again.groups_written == 0  # complete: nothing scheduled


@pytest.mark.timeout(240)
def test_killed_worker_group_is_retried_and_every_key_appears_once(ray_local, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    store = tmp_path / "store"
    # sample 6 (group 1, after two samples of it were written to the shard in flight) kills its worker once
    result = write_store_job(StoreJob(str(store), NUM, _counting(logs, die_at=6), CFG), executor="ray", workers=2,
                             max_retries=2)
    assert (logs / "died").exists(), "the factory should have killed its worker"
    assert int((logs / "died").read_text()) != os.getpid()
    assert result.manifest["num_samples"] == NUM and (store / "_SUCCESS").exists()
    assert Counter(rendered_indices(logs))[4] == 2  # group 1 was rendered again from its start by the retry
    keys = read_index(store).column("key").to_pylist()
    assert sorted(keys) == sorted(SyntheticSamples(seed=5, seconds=0.05)(i)["__key__"] for i in range(NUM))
    assert len(set(keys)) == NUM
    assert not list(store.rglob("*.tmp"))
    write_store(tmp_path / "ref", SyntheticSamples(seed=5, seconds=0.05), NUM, CFG)
    assert _tars(store) == _tars(tmp_path / "ref")
    report = verify_store(store)  # what `stemforge shards verify` runs: decode every member, cross-check the index
    assert report["ok"] and report["index_checked"] and report["samples_ok"] == NUM, report["problems"]


@pytest.mark.timeout(180)
def test_rerun_writes_only_the_deleted_group(ray_local, tmp_path: Path) -> None:
    store = tmp_path / "store"
    job = StoreJob(str(store), NUM, _counting(tmp_path / "first"), CFG)
    write_store_job(job, executor="ray", workers=2)
    assert rendered_indices(tmp_path / "first") == list(range(NUM))
    for path in (store / "shard-000002.tar", store / "index" / "shard-000002.parquet",
                 store / "index" / "groups" / "shard-000002.json", store / "_SUCCESS"):
        path.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in store.glob("*.tar")}
    rerun = StoreJob(str(store), NUM, _counting(tmp_path / "second"), CFG)
    result = write_store_job(rerun, executor="ray", workers=2)
    assert result.groups_written == 1 and (store / "_SUCCESS").exists()
    assert rendered_indices(tmp_path / "second") == [8, 9, 10, 11]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the other groups' files untouched
    write_store(tmp_path / "ref", SyntheticSamples(seed=5, seconds=0.05), NUM, CFG)
    assert _tars(store) == _tars(tmp_path / "ref")


@pytest.mark.timeout(180)
def test_drop_reasons_from_every_worker_reach_the_result(ray_local, tmp_path: Path) -> None:
    skip = [1, 9, 17]  # groups 0, 2 and 4: rendered by different tasks
    jobs = [StoreJob(str(tmp_path / "a"), NUM, _counting(tmp_path / "la", skip=skip), CFG),
            StoreJob(str(tmp_path / "b"), 6, _counting(tmp_path / "lb", skip=[0]),
                     CFG.model_copy(update={"prefix": "other"}))]
    a, b = write_stores(jobs, executor="ray", workers=2)
    assert [d["index"] for d in a.errors] == skip and all("unusable on purpose" in d["reason"] for d in a.errors)
    assert a.errors[1]["key"] == "s0005_00000009"
    assert a.manifest["num_samples"] == NUM - 3 and b.manifest["num_samples"] == 5 and len(b.errors) == 1
    # a re-run schedules nothing but still reports the drops (they are kept in the group markers)
    again = write_stores(jobs, executor="ray", workers=2)[0]
    assert again.groups_written == 0 and again.errors == a.errors


@pytest.mark.timeout(240)
def test_step_synthetic_same_stores_under_ray_and_in_process(ray_local, tmp_path: Path) -> None:
    from engine.data_steps import step_synthetic
    from engine.workspace import Workspace
    from engine.run_config import load
    from toy_sources import write_toy_sources

    sources = write_toy_sources(tmp_path / "toy", per_class=2, seconds=1.5)
    outs = {}
    for backend in ("ray", "inprocess"):
        cfg = load(None, ["mixing.duration_s=1.0", "shards.max_count=4", "engine.synthetic_counts={train: 10}",
                          f"engine.backend={backend}"])
        ws = Workspace.open(tmp_path / backend, "hash")
        out = step_synthetic(ws, cfg, str(sources))
        assert out["counts"] == {"train": 10} and Path(out["dirs"]["train"]) == tmp_path / backend / "synthetic" / "train"
        outs[backend] = _tars(Path(out["dirs"]["train"]))
    assert len(outs["ray"]) == 3 and outs["ray"] == outs["inprocess"]
    assert all(name.startswith("syn-train-") for name in outs["ray"])


@pytest.mark.timeout(180)
def test_tier_factory_spec_writes_the_same_store_under_ray_and_in_process(ray_local, tmp_path: Path) -> None:
    """The tier step's spec carries the kept tracks as FLAC bytes (not JSON): it must travel to Ray workers and
    give the in-process bytes; residual = scene - track."""
    import numpy as np
    import soundfile as sf

    from engine.shard_jobs import tier_factory_spec
    from storage.audio import AudioConfig, decode_audio, encode_audio
    from storage.shards.reader import iter_samples

    sr = 16000
    rng = np.random.default_rng(0)
    scene = (0.1 * rng.standard_normal(sr)).astype(np.float32)
    sf.write(tmp_path / "scene.flac", scene, sr, subtype="PCM_24")
    scene_read, _ = decode_audio((tmp_path / "scene.flac").read_bytes())
    rows = [{"candidate_id": f"cand-{i:03d}", "sample_rate": sr, "positive_text": "dog barking", "positive_labels": ["dog"],
             "negative_labels": ["rain"], "negative_text": "rain", "label": "dog", "scene_labels": ["dog", "rain"],
             "scene_id": "scene-0", "scene_path": str(tmp_path / "scene.flac"), "query_index": i, "re_sdr_db": 12.0 + i,
             "target_flac": encode_audio(0.5 * scene_read * (i + 1) / 6, sr)} for i in range(6)]
    stores = {}
    for name, executor in (("ray", "ray"), ("inproc", "inprocess")):
        spec = tier_factory_spec(rows, "itt", {"re_sdr_db": 10.0}, {"separator": "abc"}, "cfg", "0.1.0", AudioConfig(sample_rate=sr))
        assert spec.cache_key() is None  # bytes inside: never reused across specs by a worker
        result = write_store_job(StoreJob(str(tmp_path / name), len(rows), spec, CFG, {"tier": "itt"}),
                                 executor=executor, workers=2)
        assert result.manifest["num_samples"] == 6
        stores[name] = _tars(tmp_path / name)
    assert len(stores["ray"]) == 2 and stores["ray"] == stores["inproc"]
    sample = next(s for s in iter_samples(tmp_path / "ray") if s["__key__"] == "cand-002")
    assert sample["json"]["tier"] == "itt" and sample["json"]["scores"]["re_sdr_db"] == 14.0
    assert np.max(np.abs(sample["mix"] - sample["target"] - sample["residual"])) < 1e-4
