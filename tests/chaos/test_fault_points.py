"""engine/faults.py file-system points (`rename@`, `renamed@`, `open@`): each fires at its instruction and only
there, once per run directory, in a real process writing through storage.atomic; a plain import installs nothing.
A few seconds: one small Python process per case."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.faults import ENV, counter_path

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import sys
import engine.faults as faults
from pathlib import Path
from storage.atomic import atomic_write_text
run = Path(sys.argv[1])
print("hook", faults.install(), flush=True)
for i in range(3):
    atomic_write_text(run / "out" / f"f{i}.json", str(i))
    print("wrote", i, flush=True)
"""


def write_three(run: Path, faults: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if faults:
        env[ENV] = faults
    return subprocess.run([sys.executable, "-c", WRITER, str(run)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    (tmp_path / "run.json").write_text(json.dumps({"config_hash": "x"}))  # what makes it a run directory
    return tmp_path


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.timeout(60)
def test_no_point_no_hook(run):
    res = write_three(run, "separator_1:kill")
    assert res.returncode == 0 and "hook False" in res.stdout, res.stderr
    assert names(run / "out") == ["f0.json", "f1.json", "f2.json"]


@pytest.mark.timeout(60)
def test_rename_point_kills_with_the_file_complete_under_its_temp_name(run):
    point = "rename@*/out/f1.json"
    res = write_three(run, f"{point}:kill")
    assert res.returncode == -signal.SIGKILL and "wrote 0" in res.stdout and "wrote 1" not in res.stdout
    (tmp,) = [p for p in (run / "out").iterdir() if p.name.startswith(".f1.json.")]
    assert tmp.read_text() == "1" and names(run / "out") == sorted(["f0.json", tmp.name])  # final name not there yet
    assert counter_path(run, point, "kill").read_text() == "1"
    again = write_three(run, f"{point}:kill")  # fired once: the re-run passes
    assert again.returncode == 0, again.stderr


@pytest.mark.timeout(60)
def test_renamed_point_kills_just_after_the_rename(run):
    res = write_three(run, "renamed@*/out/f1.json:kill")
    assert res.returncode == -signal.SIGKILL and "wrote 1" not in res.stdout
    assert names(run / "out") == ["f0.json", "f1.json"] and (run / "out" / "f1.json").read_text() == "1"


@pytest.mark.timeout(60)
def test_open_point_and_oserror_kind(run):
    res = write_three(run, "open@*/out/.f2.json.*.tmp:oserror")
    assert res.returncode == 1 and "injected I/O error in open@*/out/.f2.json.*.tmp" in res.stderr
    assert names(run / "out") == ["f0.json", "f1.json"]


@pytest.mark.timeout(60)
def test_a_bad_point_is_refused(run):
    res = write_three(run, "move@*/x:kill")
    assert res.returncode == 1 and "EVENT@GLOB" in res.stderr
