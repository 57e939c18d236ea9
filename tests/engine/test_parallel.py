"""The background scorer process's failure paths: an error in the child reaches the parent with the child's
traceback, a killed child is reported instead of waited on forever, and `cancel()` stops a running child."""
from __future__ import annotations

import os
import signal

import pytest

from engine.parallel import ScorerProcess
from flows.config import load as load_config


def test_child_error_is_reraised_with_its_traceback(tmp_path):
    missing = tmp_path / "no_such_manifest"
    proc = ScorerProcess(load_config(None, []), tmp_path / "run", "cafe", str(missing))
    with pytest.raises(Exception) as info:
        proc.wait(poll_s=0.2)
    text = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "no_such_manifest" in text and "in the background scorer process" in text
    assert not proc.is_alive() and proc.exitcode == 0  # the child reported and exited on its own


def test_killed_child_is_reported_not_awaited(tmp_path):
    proc = ScorerProcess(load_config(None, []), tmp_path / "run", "cafe", str(tmp_path / "x"))
    os.kill(proc.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="without a result"):
        proc.wait(poll_s=0.2)
    assert proc.exitcode == -signal.SIGKILL


def test_cancel_terminates_a_running_child(tmp_path):
    proc = ScorerProcess(load_config(None, []), tmp_path / "run", "cafe", str(tmp_path / "x"))
    assert proc.is_alive()
    proc.cancel()
    assert not proc.is_alive() and proc.exitcode == -signal.SIGTERM
