"""The in-process executor: ordering, per-stage batch sizes, stats, resume from markers, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.executor import ExecutorError, InProcessExecutor, build_executor
from pipelines.stage import BaseStage, Batch, Resources, Stage, batch_len, concat_batches, select_rows


class AddOne(BaseStage):
    name = "add_one"
    resources = Resources(cpus=1, gpus=0, batch_size=3)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def __call__(self, batch: Batch) -> Batch:
        self.calls.append(batch_len(batch))
        return {**batch, "x": batch["x"] + 1}


class Double(BaseStage):
    name = "double"
    resources = Resources(batch_size=100)

    def __call__(self, batch: Batch) -> Batch:
        return {**batch, "y": batch["x"] * 2, "tag": [f"t{v}" for v in batch["x"]]}


class Boom(BaseStage):
    name = "boom"

    def __call__(self, batch: Batch) -> Batch:
        raise RuntimeError("model exploded")


def _inputs(n_batches: int = 3, rows: int = 7):
    for b in range(n_batches):
        yield f"b{b:03d}", {"x": np.arange(rows) + 10 * b}


def test_stages_run_in_order_with_their_batch_sizes():
    first, second = AddOne(), Double()
    assert isinstance(first, Stage)
    result = InProcessExecutor().run([first, second], _inputs())
    merged = result.merged()
    expected_x = np.concatenate([np.arange(7) + 10 * b for b in range(3)]) + 1
    np.testing.assert_array_equal(merged["x"], expected_x)
    np.testing.assert_array_equal(merged["y"], expected_x * 2)  # double saw add_one's output
    assert first.calls == [3, 3, 1] * 3  # 7 rows split by batch_size 3
    assert first.setups == 1
    stats = {s["name"]: s for s in result.stats_table()}
    assert stats["add_one"]["items_in"] == 21 and stats["double"]["items_out"] == 21
    assert stats["add_one"]["batches"] == 3
    assert set(stats["double"]) >= {"items_in", "seconds", "items_per_s"}


def test_batch_size_override_by_stage_name():
    stage = AddOne()
    InProcessExecutor({"add_one": 5}).run([stage], _inputs(1, 7))
    assert stage.calls == [5, 2]


def test_resume_loads_completed_batches(tmp_path):
    stage = AddOne()
    InProcessExecutor().run([stage, Double()], _inputs(), work_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.done")) == ["b000.done", "b001.done", "b002.done"]
    # lose one batch's marker: only that batch is recomputed
    (tmp_path / "b001.done").unlink()
    again = AddOne()
    seen: list[str] = []
    result = InProcessExecutor().run([again, Double()], _inputs(), work_dir=tmp_path, on_output=lambda k, b: seen.append(k))
    assert result.resumed == 2 and result.computed == 1
    assert again.calls == [3, 3, 1]
    assert seen == ["b000", "b001", "b002"]
    assert batch_len(result.merged()) == 21
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["computed"] == 1 and stats["resumed"] == 2


def test_fully_resumed_run_never_sets_up_models(tmp_path):
    InProcessExecutor().run([AddOne()], _inputs(2), work_dir=tmp_path)
    stage = AddOne()
    InProcessExecutor().run([stage], _inputs(2), work_dir=tmp_path)
    assert stage.setups == 0 and stage.calls == []


def test_failure_names_stage_and_batch_and_leaves_no_marker(tmp_path):
    with pytest.raises(ExecutorError, match=r"'boom'.*'b000'.*model exploded"):
        InProcessExecutor().run([AddOne(), Boom()], _inputs(1), work_dir=tmp_path)
    assert not list(tmp_path.glob("*.done"))


def test_bad_keys_and_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match="must match"):
        InProcessExecutor().run([AddOne()], [("a.b", {"x": np.arange(2)})])
    with pytest.raises(ValueError, match="duplicate"):
        InProcessExecutor().run([AddOne()], [("a", {"x": np.arange(2)}), ("a", {"x": np.arange(2)})])
    with pytest.raises(ValueError, match="unique"):
        InProcessExecutor().run([AddOne(), AddOne()], [])
    with pytest.raises(ValueError, match="ray"):
        build_executor("ray")


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
