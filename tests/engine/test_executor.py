"""The executor contract in-process: specs, chain checks, sinks (parts per key, resume), quarantine, resources.

The Ray executor runs the same contract in tests/engine/test_ray_executor.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.executors import ChainError, ExecutorError, StageSetupError, StageSpec, Task, build_executor, fuse_groups
from engine.executors.inprocess import InProcessExecutor
from engine.resources import Resources, plan_resources, stage_resources
from engine.sinks import TableSink
from pipelines.filters.table import read_candidates
from pipelines.stage import ModelCache, StageContext, batch_len, concat_batches, select_rows

HERE = str(Path(__file__).parent)
ACTOR = Resources(kind="actor")


def spec(name: str, resources: Resources = Resources(), **kwargs) -> StageSpec:
    return StageSpec(f"stages_for_tests:{name}", kwargs, resources, import_path=HERE)


def tasks(n: int = 3) -> list[Task]:
    """Task i has ids a{2i}, a{2i+1}; x of task 2's second row is negative (skipped and counted by Expand)."""
    return [Task(f"t{i}", {"id": [f"a{2 * i}", f"a{2 * i + 1}"], "x": [2 * i, -1 if i == 2 else 2 * i + 1]})
            for i in range(n)]


def chain(**score) -> list[StageSpec]:
    return [spec("Expand", n=2), spec("Score", ACTOR, **score), spec("Decide")]


def test_outputs_go_to_the_sink_per_key_with_stats_and_counters(tmp_path):
    sink = TableSink(str(tmp_path / "sink"))
    summary = InProcessExecutor().run(chain(), tasks(), sink)
    assert sorted(p.name for p in sink.table_dir.iterdir()) == ["part-t0.parquet", "part-t1.parquet", "part-t2.parquet"]
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob(".*.tmp"))
    table = read_candidates(sink.table_dir)
    assert list(table["row_id"]) == ["a0-0", "a0-1", "a1-0", "a1-1", "a2-0", "a2-1", "a3-0", "a3-1", "a4-0", "a4-1"]
    np.testing.assert_allclose(table["score"], np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]) * 2.0 + 0.5)
    assert "audio" not in table  # audio columns never go to the table
    assert summary.computed == 3 and summary.skipped == 0 and summary.rows_out == 10
    assert summary.counts == {"negative_skipped": 1}
    stats = {s["name"]: s for s in summary.stages}
    assert stats["expand"]["rows_in"] == 6 and stats["expand"]["rows_out"] == 10 and stats["score"]["rows_in"] == 10
    assert {"rows_per_s", "audio_hours_per_s", "failures", "seconds"} <= set(stats["score"])
    assert [g["stages"] for g in summary.groups] == [["expand", "score", "decide"]]  # equal resources: fused
    record = json.loads((sink.commit_dir / "t2.json").read_text())
    assert record["rows_in"] == 2 and record["rows_out"] == 2 and record["counts"] == {"negative_skipped": 1}


def test_committed_keys_are_skipped_before_any_setup(tmp_path):
    sink = TableSink(str(tmp_path / "sink"))
    InProcessExecutor().run(chain(), tasks(2), sink)
    # a spec whose setup would fail: a fully committed run never builds nor sets up the chain
    again = InProcessExecutor().run(chain(fail_setup=True), tasks(2), sink)
    assert again.computed == 0 and again.skipped == 2 and again.rows_out == 8
    # one more key: only it is computed (and then the failing setup surfaces, naming the stage)
    with pytest.raises(StageSetupError, match=r"'score'.*FileNotFoundError.*no such checkpoint"):
        InProcessExecutor().run(chain(fail_setup=True), tasks(3), sink)
    assert "t2" not in sink.committed()


def test_missing_column_fails_before_any_model_loads(tmp_path):
    bad = [spec("Score", ACTOR, fail_setup=True), spec("Decide")]  # Score needs `audio`: the tasks have none
    with pytest.raises(ChainError, match=r"'score' needs column\(s\) \['audio'\]"):
        InProcessExecutor().run(bad, tasks(), TableSink(str(tmp_path / "s")))
    with pytest.raises(ChainError, match="'decide'"):
        InProcessExecutor().run([spec("Expand"), spec("Decide")], tasks(), TableSink(str(tmp_path / "s")))


def test_a_row_that_raises_is_quarantined_and_the_others_finish(tmp_path):
    sink = TableSink(str(tmp_path / "sink"))
    summary = InProcessExecutor().run(chain(fail_on="a3-1"), tasks(), sink)
    assert summary.quarantined == 1 and summary.rows_out == 9
    assert sink.quarantine_rows() == [{"stage": "score", "key": "t1", "row_id": "a3-1", "error_kind": "ValueError",
                                       "message": "cannot score a3-1"}]
    assert "a3-1" not in set(read_candidates(sink.table_dir)["row_id"])
    assert {s["name"]: s["failures"] for s in summary.stages}["score"] == 1


def test_every_row_failing_is_an_error_not_an_empty_table(tmp_path):
    with pytest.raises(ExecutorError, match="every row failed"):
        InProcessExecutor().run([spec("Expand", n=1), spec("Score", ACTOR, fail_on="a0-0")],
                                [Task("t0", {"id": ["a0"], "x": [1]})], TableSink(str(tmp_path / "s")))


def test_specs_are_data_and_reject_non_json_kwargs():
    s = StageSpec.of("pipelines.filters.silence:SilenceScoring", cfg=__import__("pipelines.filters", fromlist=["x"]).FilterConfig())
    assert json.loads(json.dumps(s.kwargs))["cfg"]["silence_ratio_max"] == 0.95
    assert s.build().name == "score_silence"
    with pytest.raises(ValueError, match="JSON-able"):
        StageSpec("m:C", {"f": lambda: 1})
    with pytest.raises(ValueError, match="module:callable"):
        StageSpec("nocolon")
    with pytest.raises(ValueError, match="must match"):
        Task("a.b", {"x": [1]})


def test_resources_come_from_the_config_in_one_place():
    from engine.run_config import load

    cfg = load(None, ["engine.batch_sizes={score_pc: 3}", "pseudo_label.batch_size=2", "clap.batch_size=5",
                      "engine.actor_gpus=0.5", "engine.replicas=[1, 2]"])
    pl = stage_resources(cfg, "pseudo_label", True, gpus_available=False)
    assert (pl.batch_size, pl.gpus, pl.kind, pl.min_replicas, pl.max_replicas) == (2, 0.0, "actor", 1, 2)
    assert stage_resources(cfg, "score_clap", True, False).batch_size == 5
    assert stage_resources(cfg, "score_pc", True, False).batch_size == 3  # the override wins
    assert stage_resources(cfg, "score_clap", True, gpus_available=True).gpus == 0.5  # device auto + GPUs
    assert stage_resources(cfg, "decide_pc", False, True).kind == "task"
    cuda = load(None, ["engine.device=cuda"])
    with pytest.raises(ValueError, match="no GPUs"):
        stage_resources(cuda, "score_clap", True, gpus_available=False)
    planned = plan_resources(cfg, [StageSpec.of("pipelines.filters.rules:FinalDecision"),
                                   StageSpec.of("pipelines.filters.silence:SilenceScoring", cfg=cfg.filters)], False)
    assert all(p.resources.kind == "task" for p in planned)


def test_fusing_follows_equal_resources():
    gpu = Resources(gpus=0.5, kind="actor")
    specs = [spec("Expand"), spec("Score", gpu), spec("Score", gpu), spec("Decide"), spec("Decide")]
    assert fuse_groups(specs) == [[0], [1, 2], [3, 4]]
    assert fuse_groups([spec("Expand"), spec("Score", ACTOR), spec("Decide")]) == [[0, 1, 2]]


def test_model_cache_shares_one_instance_between_fused_stages():
    from models.clap.config import ClapConfig
    from pipelines.filters.clap import ClapScoring
    from pipelines.pseudolabel.config import PseudoLabelConfig
    from pipelines.pseudolabel.stages import PseudoLabel

    clap_cfg, judge_cfg = ClapConfig(checkpoint="/c.pt").model_dump(mode="json"), {"backend": "mini", "checkpoint": "/j.pt"}
    ctx = StageContext(device="cpu", models=ModelCache())
    fake_clap, fake_judge, fake_sep = object(), object(), object()
    # what load_model would build, pre-seeded under the same keys (no checkpoint needed for the test)
    ctx.models.get("clap", {**clap_cfg, "device": "cpu"}, lambda: fake_clap)
    ctx.models.get("separator", {"checkpoint": "/s.pt", "device": "cpu"}, lambda: fake_sep)
    from models.judge.config import JudgeConfig

    jd = JudgeConfig.model_validate(judge_cfg).model_dump(mode="json")
    ctx.models.get("judge", {**jd, "device": "cpu"}, lambda: fake_judge)
    pl = PseudoLabel(PseudoLabelConfig(num_candidates=2), separator={"checkpoint": "/s.pt"}, clap=clap_cfg, judge=jd)
    scoring = ClapScoring(clap_cfg)
    pl.setup(ctx)
    scoring.setup(ctx)
    assert pl.clap is fake_clap and scoring.scorer is fake_clap and pl.judge is fake_judge and pl.separator is fake_sep
    assert ctx.models.loads == ["clap", "separator", "judge"]  # nothing built twice


def test_unknown_backend_is_a_config_error():
    from engine.config import EngineConfig

    assert build_executor(EngineConfig(backend="inprocess")).backend == "inprocess"
    with pytest.raises(ValueError, match="not available"):
        build_executor(EngineConfig.model_construct(backend="spark"))


def test_batch_helpers_keep_types():
    a = {"x": np.arange(3), "s": ["a", "b", "c"], "audio": [np.zeros(4), np.zeros(5), np.zeros(6)]}
    b = concat_batches([a, a])
    assert isinstance(b["x"], np.ndarray) and b["s"] == ["a", "b", "c"] * 2 and len(b["audio"]) == 6
    sel = select_rows(a, np.array([True, False, True]))
    assert sel["s"] == ["a", "c"] and list(sel["x"]) == [0, 2]
    with pytest.raises(ValueError, match="ragged"):
        batch_len({"x": np.arange(3), "y": [1]})
    with pytest.raises(ValueError, match="batch_size"):
        Resources(batch_size=0)
