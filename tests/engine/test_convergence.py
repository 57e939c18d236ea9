"""The pure pieces under the flows: the stop rule (engine/convergence.py), which failures are transient
(engine/errors.py) and the fault-injection plan (engine/faults.py)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from engine.convergence import StopDecision, decide
from engine.errors import is_transient
from engine.faults import ENV, maybe_fail, planned
from engine.workspace import RunError
from storage.configio import ConfigError

RULE = {"min_gain_db": 0.2, "min_iterations": 1, "max_iterations": 3, "metric": "natural_sdri on the val scenes"}


# ---- the stop rule -------------------------------------------------------------------------------------------------

def test_gain_below_min_gain_stops_and_says_so():
    d = decide([4.0, 4.1], **RULE)
    assert d == StopDecision(1, True, d.reason, pytest.approx(0.1))
    assert "run.min_gain_db=0.2" in d.reason and "natural_sdri on the val scenes" in d.reason
    assert "+0.10 dB" in d.reason and "from 4.00 to 4.10" in d.reason


def test_enough_gain_continues_until_max_iterations():
    d1 = decide([4.0, 5.0], **RULE)
    assert not d1.stop and d1.iteration == 1 and d1.gain_db == pytest.approx(1.0) and "continuing" in d1.reason
    d2 = decide([4.0, 5.0, 6.0], **RULE)
    assert not d2.stop
    d3 = decide([4.0, 5.0, 6.0, 7.0], **RULE)
    assert d3.stop and d3.iteration == 3 and "run.max_iterations=3" in d3.reason
    assert d3.to_dict() == {"iteration": 3, "stop": True, "reason": d3.reason, "gain_db": pytest.approx(1.0)}


def test_max_iterations_wins_over_a_small_gain():
    d = decide([4.0, 3.0], **{**RULE, "max_iterations": 1})
    assert d.stop and "run.max_iterations=1" in d.reason and "min_gain_db" not in d.reason
    assert d.gain_db == pytest.approx(-1.0)


def test_min_iterations_holds_off_the_gain_rule():
    rule = {**RULE, "min_iterations": 2}
    early = decide([4.0, 3.0], **rule)  # a loss at iteration 1, but two iterations are required
    assert not early.stop and "continuing" in early.reason
    late = decide([4.0, 3.0, 3.05], **rule)
    assert late.stop and "run.min_gain_db" in late.reason and late.iteration == 2


@pytest.mark.parametrize("values", [[4.0, None], [None, 4.0]])
def test_a_missing_figure_stops(values):
    d = decide(values, **RULE)
    assert d.stop and d.gain_db is None and "no natural_sdri on the val scenes to compare" in d.reason


def test_the_rule_needs_an_iteration():
    with pytest.raises(ValueError, match="at least one iteration"):
        decide([4.0], **RULE)


# ---- transient or permanent ---------------------------------------------------------------------------------------

def test_io_errors_are_transient_wrong_paths_and_config_errors_are_not():
    assert is_transient(OSError(errno.EIO, "disk hiccup"))
    assert is_transient(TimeoutError("slow storage"))  # an OSError subclass that a retry can cure
    assert not is_transient(FileNotFoundError(errno.ENOENT, "no such file", "/x"))
    assert not is_transient(PermissionError(errno.EACCES, "denied", "/x"))
    assert not is_transient(RunError("/runs/x: config changed"))
    assert not is_transient(ConfigError("run.yaml", [("run.seed", "not an integer")]))
    assert not is_transient(ValueError("unusable input"))


def test_transient_follows_the_cause_chain():
    try:
        try:
            raise OSError(errno.EIO, "lost mount")
        except OSError as low:
            raise RuntimeError("step failed") from low
    except RuntimeError as high:
        assert is_transient(high)
    try:
        try:
            raise FileNotFoundError(errno.ENOENT, "missing", "/x")
        except OSError as low:
            raise RuntimeError("step failed") from low
    except RuntimeError as high:
        assert not is_transient(high)


def test_ray_task_error_is_judged_by_the_error_it_wraps():
    from ray.exceptions import RayTaskError, WorkerCrashedError

    wrapped = RayTaskError("train", "Traceback ...", OSError(errno.EIO, "shard read"))
    assert is_transient(wrapped)
    assert is_transient(wrapped.as_instanceof_cause())  # how ray.get raises it
    assert not is_transient(RayTaskError("train", "Traceback ...", FileNotFoundError(errno.ENOENT, "gone", "/x")))
    assert not is_transient(RayTaskError("train", "Traceback ...", RunError("/runs/x: bad input")))
    assert is_transient(WorkerCrashedError())


# ---- fault injection ----------------------------------------------------------------------------------------------

def test_fault_plan_parsing(monkeypatch):
    monkeypatch.setenv(ENV, " synthetic:oserror:2 , separator_1:kill,corpus ,filter_0:config:1")
    assert planned("synthetic") == ("oserror", 2)
    assert planned("separator_1") == ("kill", 1)
    assert planned("corpus") == ("oserror", 1)
    assert planned("filter_0") == ("config", 1)
    assert planned("separator_0") is None and planned("synthetic_1") is None
    monkeypatch.setenv(ENV, "corpus:explode")
    with pytest.raises(ValueError, match="kind must be one of oserror, config, kill"):
        planned("corpus")
    monkeypatch.delenv(ENV)
    assert planned("corpus") is None


def test_faults_fire_the_planned_number_of_times_per_run_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "synthetic:oserror:2,corpus:config")
    for _ in range(2):
        with pytest.raises(OSError) as raised:
            maybe_fail("synthetic", tmp_path)
        assert is_transient(raised.value)
    maybe_fail("synthetic", tmp_path)  # fired twice: from now on the step runs
    assert (tmp_path / "faults" / "synthetic.oserror").read_text() == "2"
    with pytest.raises(RunError, match=str(tmp_path)) as raised:
        maybe_fail("corpus", tmp_path)
    assert not is_transient(raised.value)
    maybe_fail("corpus", tmp_path)
    maybe_fail("separator_0", tmp_path)  # nothing planned
    other = tmp_path / "other-run"
    with pytest.raises(RunError):  # the count belongs to the run directory
        maybe_fail("corpus", other)


@pytest.mark.timeout(120)
def test_kill_fault_kills_the_process_once_across_processes(tmp_path):
    code = f"from engine.faults import maybe_fail; maybe_fail('separator_1', {str(tmp_path)!r}); print('survived')"
    env = {**os.environ, ENV: "separator_1:kill:1"}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == -9 and "survived" not in first.stdout
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "survived" in second.stdout
