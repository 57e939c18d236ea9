"""The stemforge flows (flows/cycle.py) against a real Prefect server on this machine (tests/flows/prefect_server.py),
on the tiny preset with the in-process backend (a whole run in about a minute on two cores).

- A transient failure (an injected I/O error in `synthetic`) is retried and the flow completes: the server's state
  history of that task run shows AwaitingRetry -> Retrying -> Completed. A configuration error is not retried: the
  flow fails after one attempt, and the message names the run directory.
- A run killed with SIGKILL midway (in `separator_1`), started again, recomputes nothing that had finished (the
  markers are byte- and mtime-identical; the report lists them as resumed) and ends with the figures, the
  checkpoint weights and the checkpoint hashes of an uninterrupted run of the same config in another directory;
  a third run has nothing left to do and its report still lists every step as resumed.
- The stop rule ends the cycle on `run.min_gain_db` and on `run.max_iterations`, and the report (JSON and
  Markdown) says which.
- A completed run's artifacts read back from the server agree with its report.json.

The uninterrupted run (module fixture `whole`) serves as the kill test's reference, the max_iterations case and the
artifacts test, so the module does about four tiny runs' work in all (about 3 min on two lightly loaded cores).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator
from uuid import UUID

import pytest

from prefect_server import wait_for  # tests/flows is on sys.path (conftest.py)
from models.weights import weights_hash

from engine.faults import ENV

ROOT = Path(__file__).resolve().parents[2]
STEMFORGE = str(Path(sys.executable).parent / "stemforge")
TINY = str(ROOT / "configs" / "tiny.yaml")
INPROCESS = ("--set", "engine.backend=inprocess")
# stops on max_iterations; the final stage (train_final) is tested in test_cli_engine_steps.py and tests/chaos/
ONE_ITERATION = ("--set", "run.max_iterations=1", "--set", "run.min_gain_db=-100", "--set", "engine.final.enabled=false")
RUN_TIMEOUT_S = 240


# ---- helpers -------------------------------------------------------------------------------------------------------

def _kill_group(pid: int) -> None:
    """The CLI runs in its own session: SIGKILL whatever of its group is left (workers orphaned by a kill)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stemforge_run(server: Any, out: Path, name: str, *sets: str, faults: str | None = None,
                  timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`stemforge run` on the tiny preset as a user starts it, reporting to `server`."""
    env = server.env()
    env.pop(ENV, None)
    if faults:
        env[ENV] = faults
    args = [STEMFORGE, "run", "--config", TINY, *INPROCESS, *sets, "--out", str(out), "--name", name]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    finally:
        _kill_group(proc.pid)
        if proc.returncode is None:
            proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def markers(root: Path) -> dict[str, tuple[int, bytes]]:
    """step -> (mtime_ns, content) of every done-marker of a run."""
    return {p.stem: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((root / "steps").glob("*.json"))}


def report_of(root: Path) -> dict[str, Any]:
    return json.loads((root / "report.json").read_text())


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


def _kept(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("iterations", "headline", "decisions", "scorers", "corpus", "synthetic", "config_hash")}


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """What two runs of one config must agree on: every number (and None, bool) of the iterations, headline,
    decisions, scorers, corpus and synthetic counts, and the stop reasons; not timings, paths or hashes."""
    return {path: v for path, v in _leaves(_kept(report))
            if not isinstance(v, str) or path.endswith(".reason") or path == "config_hash"}


def hashes(report: dict[str, Any]) -> dict[str, str]:
    """The checkpoint hashes of the report (separators, scorers)."""
    return {path: v for path, v in _leaves(_kept(report)) if isinstance(v, str) and path.endswith("hash")
            and path != "config_hash"}


def checkpoints(report: dict[str, Any]) -> dict[str, str]:
    """Every checkpoint the report names: separators, controls, scorers."""
    out = {f"scorer {w}": s["checkpoint"] for w, s in report["scorers"].items()}
    for it in report["iterations"]:
        out[f"separator {it['iteration']}"] = it["separator_checkpoint"]
        if it.get("control_checkpoint"):
            out[f"control {it['iteration']}"] = it["control_checkpoint"]
    return out


def assert_same_weights(a: str, b: str) -> None:
    assert weights_hash(a) == weights_hash(b), f"{a} vs {b}: weights differ"


def task_runs(client: Any, flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {tr.name: tr for tr in runs}


def finished_task(client: Any, flow_run_id: UUID, name: str) -> Callable[[], Any]:
    def probe() -> Any:
        tr = task_runs(client, flow_run_id).get(name)
        return tr if tr is not None and tr.state is not None and tr.state.is_final() else None

    return probe


# ---- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture
def on_server(prefect_server: Any, tmp_path: Path) -> Iterator[Any]:
    """Flows called in this test report to the test server (their results and cache records under the test's own
    directory, not the user's PREFECT_HOME); yields a sync client of it."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url,
                             PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "prefect-storage")}):
        with get_client(sync_client=True) as client:
            yield client
        drain_to_server()


def drain_to_server() -> None:
    """Send this process's queued logs and events while the server still runs: left queued, they are retried
    against the stopped server at interpreter exit (a minute of 'Error logging to API')."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)


@pytest.fixture(scope="module")
def whole(prefect_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted one-iteration run on the server (the kill test's reference)."""
    out = tmp_path_factory.mktemp("whole")
    res = stemforge_run(prefect_server, out, "cyc-whole", *ONE_ITERATION)
    assert res.returncode == 0, res.stderr[-4000:]
    return out / "cyc-whole"


def tiny_config() -> dict[str, Any]:
    from engine.run_config import load

    return load(TINY, ["engine.backend=inprocess"]).model_dump(mode="json")


# ---- retries: transient only ---------------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_transient_failure_is_retried_and_the_flow_completes(on_server, tmp_path, monkeypatch):
    from flows.cycle import build_dataset

    monkeypatch.setenv(ENV, "synthetic:oserror:1")
    state = build_dataset(config=tiny_config(), out_root=str(tmp_path), name="cyc-retry", return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id

    synthetic = wait_for("the synthetic task run", finished_task(on_server, flow_run_id, "synthetic"))
    assert synthetic.run_count == 2 and synthetic.state.is_completed()
    history = [(s.type.value, s.name) for s in on_server.read_task_run_states(synthetic.id)]
    assert ("SCHEDULED", "AwaitingRetry") in history and ("RUNNING", "Retrying") in history, history
    assert history.index(("SCHEDULED", "AwaitingRetry")) < history.index(("RUNNING", "Retrying"))
    assert history[-1] == ("COMPLETED", "Completed")
    corpus = task_runs(on_server, flow_run_id)["corpus"]
    assert corpus.run_count == 1 and corpus.state.is_completed()
    assert on_server.read_flow_run(flow_run_id).state.is_completed()

    root = tmp_path / "cyc-retry"
    assert (root / "steps" / "synthetic.json").is_file()
    assert (root / "faults" / "synthetic.oserror").read_text() == "1"  # fired once, then the retry ran the step


@pytest.mark.timeout(180)
def test_config_error_is_not_retried(on_server, tmp_path, monkeypatch):
    from flows.cycle import build_dataset

    monkeypatch.setenv(ENV, "synthetic:config:1")
    root = tmp_path / "cyc-config"
    state = build_dataset(config=tiny_config(), out_root=str(tmp_path), name="cyc-config", return_state=True)
    assert state.is_failed()
    assert str(root) in state.message and "RunError" in state.message
    flow_run_id = state.state_details.flow_run_id

    synthetic = wait_for("the synthetic task run", finished_task(on_server, flow_run_id, "synthetic"))
    assert synthetic.run_count == 1 and synthetic.state.is_failed()
    assert str(root) in synthetic.state.message
    history = [s.name for s in on_server.read_task_run_states(synthetic.id)]
    assert "AwaitingRetry" not in history and "Retrying" not in history, history
    assert wait_for("the failed flow run", lambda: on_server.read_flow_run(flow_run_id).state.is_failed())
    assert not (root / "steps" / "synthetic.json").exists()
    assert (root / "steps" / "corpus.json").is_file()  # what finished before the error is kept


# ---- a crash midway, resumed ---------------------------------------------------------------------------------------

@pytest.mark.timeout(600)
def test_killed_run_resumes_without_recomputing_and_matches_an_uninterrupted_run(prefect_server, whole, tmp_path):
    faults = "separator_1:kill:1"
    killed = stemforge_run(prefect_server, tmp_path, "cyc-killed", *ONE_ITERATION, faults=faults)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    root = tmp_path / "cyc-killed"
    before = markers(root)
    assert {"corpus", "synthetic", "separator_0", "scorer_clap", "scorer_judge", "scorer_pc", "evaluate_0",
            "filter_0", "tiers_0"} <= set(before)
    assert "separator_1" not in before and not (root / "report.json").exists()

    resumed = stemforge_run(prefect_server, tmp_path, "cyc-killed", *ONE_ITERATION, faults=faults)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    after = markers(root)
    assert {step: after[step] for step in before} == before  # nothing that had finished was written again
    for step in before:
        assert f"step {step}: running" not in resumed.stderr
    assert "step separator_1: running" in resumed.stderr
    report = report_of(root)
    assert set(before) <= set(report["resumed_steps"]), report["resumed_steps"]
    assert "separator_1" not in report["resumed_steps"]
    assert set(report["timings"]) == set(after)
    reference = report_of(whole)
    assert figures(report) == figures(reference)
    assert checkpoints(report).keys() == checkpoints(reference).keys()
    for what, path in checkpoints(report).items():
        assert_same_weights(path, checkpoints(reference)[what])

    idle = stemforge_run(prefect_server, tmp_path, "cyc-killed", *ONE_ITERATION, faults=faults)
    assert idle.returncode == 0, idle.stderr[-4000:]
    assert markers(root) == after and re.search(r"step \S+: running", idle.stderr) is None
    again = report_of(root)
    assert figures(again) == figures(reference)
    assert (root / "faults" / "separator_1.kill").read_text() == "1"  # killed once in three runs

    problems = []  # two independent claims: both are reported when both fail
    # the report tells the same story however the steps were skipped (marker or Prefect cache)
    if sorted(again["resumed_steps"]) != sorted(after) or set(again["timings"]) != set(after):
        problems.append(f"idle run: resumed_steps {again['resumed_steps']}, timings {sorted(again['timings'])}; "
                        f"expected every step: {sorted(after)}")
    # the same weights (checked above) must carry the same checkpoint hash: it versions filter decisions and tiers
    if hashes(report) != hashes(reference):
        problems.append(f"checkpoint hashes differ for the same weights: "
                        f"{ {k: (v, hashes(reference)[k]) for k, v in hashes(report).items() if v != hashes(reference)[k]} }")
    assert not problems, "\n".join(problems)


# ---- the stop rule -------------------------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_cycle_stops_on_max_iterations(whole):
    report = report_of(whole)
    reason = report["headline"]["stopped"]["reason"]
    assert "run.max_iterations=1" in reason and "min_gain_db" not in reason
    assert report["headline"]["iterations"] == 1 and len(report["iterations"]) == 2
    assert [d["stop"] for d in report["decisions"]] == [True] and report["decisions"][0]["iteration"] == 1
    assert report["decisions"][0]["reason"] == reason
    assert reason in (whole / "report.md").read_text()


@pytest.mark.timeout(300)
def test_cycle_stops_on_min_gain(prefect_server, tmp_path):
    res = stemforge_run(prefect_server, tmp_path, "cyc-gain", "--set", "run.max_iterations=3",
                        "--set", "run.min_iterations=1", "--set", "run.min_gain_db=100")
    assert res.returncode == 0, res.stderr[-4000:]
    root = tmp_path / "cyc-gain"
    report = report_of(root)
    reason = report["headline"]["stopped"]["reason"]
    assert reason.startswith("iteration 1:") and "run.min_gain_db=100" in reason and "max_iterations" not in reason
    assert report["headline"]["iterations"] == 1 and len(report["iterations"]) == 2
    (decision,) = report["decisions"]
    assert decision["stop"] and decision["iteration"] == 1 and decision["gain_db"] < 100
    assert decision["gain_db"] == pytest.approx(report["iterations"][1]["stop_value"]
                                                - report["iterations"][0]["stop_value"])
    assert reason in (root / "report.md").read_text() and f"stopped: {reason}" in res.stdout
    assert not (root / "steps" / "separator_2.json").exists()  # the cycle did stop there


# ---- artifacts -----------------------------------------------------------------------------------------------------

def latest_artifact(client: Any, key: str) -> Any:
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    found = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
        key=ArtifactCollectionFilterKey(any_=[key])))
    assert len(found) == 1, f"artifact {key}: {found}"
    return found[0]


@pytest.mark.timeout(300)
def test_artifacts_of_a_completed_run_agree_with_its_report(whole, on_server):
    report = report_of(whole)
    md = latest_artifact(on_server, "report-cyc-whole")
    assert md.type == "markdown" and md.data == (whole / "report.md").read_text()
    assert on_server.read_flow_run(md.flow_run_id).state.is_completed()

    sdri = latest_artifact(on_server, "sdri-cyc-whole")
    assert sdri.type == "table"
    rows = json.loads(sdri.data) if isinstance(sdri.data, str) else sdri.data
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in report["iterations"]] == [0, 1]
    for row, it in zip(rows, report["iterations"]):
        assert row["natural_sdri_db"] == it["natural_sdri_db"] and row["synthetic_sdri_db"] == it["sdri_db"]
        assert row["val_natural_sdri_db"] == it["val_natural_sdri_db"]
    assert rows[1]["control_natural_sdri_db"] == report["iterations"][1]["control_natural_sdri_db"]

    data = latest_artifact(on_server, "data-cyc-whole")
    rows9 = json.loads(data.data) if isinstance(data.data, str) else data.data
    labelled = [it for it in report["iterations"] if it.get("candidates") is not None]
    assert [r["iteration"] for r in rows9] == [it["iteration"] for it in labelled] and rows9
    for row, it in zip(rows9, labelled):
        assert row["source_clips"] == it["scenes_labelled"] and row["tracks_10db"] == it["kept_itt"]
        assert row["tracks_15db"] == it["kept_sst"]
