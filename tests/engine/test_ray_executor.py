"""The Ray Data executor on the session's local Ray (2 CPUs, 1 logical GPU): same sink contents as in-process,
resume across backends, quarantine, a worker killed mid-task, GPU placement by num_gpus with fractional sharing.

Every test runs under a timeout; the Ray instance is the `ray_local` fixture's (stopped at session end).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from engine.executors import StageSetupError, StageSpec, Task
from engine.executors.inprocess import InProcessExecutor
from engine.executors.ray_data import RayExecutor
from engine.resources import Resources
from engine.sinks import TableSink
from pipelines.filters.table import read_candidates

HERE = str(Path(__file__).parent)
ACTOR = Resources(kind="actor")


def spec(name: str, resources: Resources = Resources(), **kwargs) -> StageSpec:
    return StageSpec(f"stages_for_tests:{name}", kwargs, resources, import_path=HERE)


def tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", {"id": [f"a{2 * i}", f"a{2 * i + 1}"], "x": [2 * i, 2 * i + 1]}) for i in range(n)]


def chain(**score) -> list[StageSpec]:
    return [spec("Expand", n=2), spec("Score", ACTOR, **score), spec("Decide")]


def parts(sink: TableSink) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(sink.table_dir.glob("part-*.parquet"))}


@pytest.mark.timeout(240)
def test_both_executors_write_identical_tables_and_resume_each_other(ray_local, tmp_path):
    ref = TableSink(str(tmp_path / "inprocess"))
    InProcessExecutor().run(chain(), tasks(4), ref)
    # in-process starts (2 of 4 keys), Ray finishes; then the other way round
    a = TableSink(str(tmp_path / "a"))
    InProcessExecutor().run(chain(), tasks(2), a)
    s_ray = RayExecutor().run(chain(), tasks(4), a)
    assert (s_ray.computed, s_ray.skipped, s_ray.rows_out) == (2, 2, 16)
    b = TableSink(str(tmp_path / "b"))
    RayExecutor().run(chain(), tasks(2), b)
    s_local = InProcessExecutor().run(chain(), tasks(4), b)
    assert (s_local.computed, s_local.skipped) == (2, 2)
    assert parts(a) == parts(ref) and parts(b) == parts(ref)  # byte-identical parts, whoever wrote them
    assert s_ray.backend == "ray" and [g["stages"] for g in s_ray.groups] == [["expand", "score", "decide"]]


@pytest.mark.timeout(240)
def test_row_errors_are_quarantined_and_a_killed_worker_is_retried(ray_local, tmp_path):
    marker = tmp_path / "died"
    sink = TableSink(str(tmp_path / "sink"))
    summary = RayExecutor().run(chain(fail_on="a3-1", die_once=str(marker)), tasks(4), sink)
    assert marker.exists()  # the first call killed its actor process
    table = read_candidates(sink.table_dir)
    ids = list(table["row_id"])
    assert len(ids) == len(set(ids)) == 15 and "a3-1" not in ids  # every other row exactly once
    assert sorted(sink.committed()) == ["t0", "t1", "t2", "t3"]
    assert summary.quarantined == 1 and sink.quarantine_rows()[0]["row_id"] == "a3-1"
    assert sink.quarantine_rows()[0]["error_kind"] == "ValueError"
    with pytest.raises(StageSetupError, match="no such checkpoint"):
        RayExecutor().run(chain(fail_setup=True), tasks(1), TableSink(str(tmp_path / "bad")))


@pytest.mark.timeout(300)
def test_gpu_stages_share_the_logical_gpu_and_run_on_cpu_torch(ray_local, tmp_path, caplog):
    """Two actors with num_gpus=0.5 coexist on the one logical GPU (their setups wait for each other); Ray grants
    them GPU id 0; torch has no CUDA here, so they run on CPU and the driver says so."""
    half = Resources(cpus=0.5, gpus=0.5, kind="actor", min_replicas=2, max_replicas=2)
    light = Resources(cpus=0.5)
    specs = [spec("Expand", light, n=2), spec("Score", half, barrier=[str(tmp_path / "barrier"), 2], record_worker=True),
             spec("Decide", light)]
    sink = TableSink(str(tmp_path / "sink"))
    with caplog.at_level(logging.WARNING, logger="stemforge.engine"):
        summary = RayExecutor().run(specs, tasks(4), sink)
    assert len(list((tmp_path / "barrier").iterdir())) == 2
    table = read_candidates(sink.table_dir)
    assert set(table["gpu_ids"]) == {"0"} and set(table["device"]) == {"cpu"}
    assert [g["stages"] for g in summary.groups] == [["expand"], ["score"], ["decide"]]
    assert [g["kind"] for g in summary.groups] == ["task", "actor", "task"] and summary.groups[1]["gpus"] == 0.5
    assert "ran on CPU torch" in caplog.text
    np.testing.assert_allclose(np.sort(table["score"]), np.sort(np.repeat(np.arange(8), 2) * 2.0 + 0.5))
