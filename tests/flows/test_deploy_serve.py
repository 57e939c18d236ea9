"""`stemforge deploy`, `stemforge serve` and `stemforge flows runs` against a real Prefect server on this machine
(tests/flows/prefect_server.py; one for the session), each command a subprocess as a user would start it.

- A cron deployment: the server's scheduler creates its Scheduled runs on the cron's grid (the guard for a broken
  server stack, e.g. a wrong sqlalchemy, under which cron never fires).
- The tiny build deployed, then served from another process that only reads the server: a triggered run
  completes, writes its run directory and the `build-<run>` artifact with the tiny preset's counts, is listed
  Completed by `flows runs --json`; serving kept the deployment's parameters and schedule. SIGTERM to `serve`
  with a run in progress: the run ends Cancelled on the server (not Running forever) and serve exits 0.
- A bad config exits 2 and registers nothing; an unknown `serve --name` exits 2; without PREFECT_API_URL both
  commands exit 2 with a message that says so.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from uuid import UUID

import pytest

from prefect_server import wait_for  # tests/flows is on sys.path (conftest.py)

ROOT = Path(__file__).resolve().parents[2]
STEMFORGE = str(Path(sys.executable).parent / "stemforge")
TINY = str(ROOT / "configs" / "tiny.yaml")


def stemforge(server: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEMFORGE, *args], env=server.env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def client(prefect_server: Any) -> Iterator[Any]:
    """A sync Prefect client of the test server (PREFECT_API_URL set for this test only)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as c:
            yield c


def runs_of(client: Any, deployment_id: UUID, state: str | None = None) -> list[Any]:
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)

    flow_run_filter = None
    if state:
        flow_run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])))
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                                 flow_run_filter=flow_run_filter)


@pytest.mark.timeout(240)  # timeouts include starting the session's server (15 s idle, a minute on a busy machine)
def test_cron_deployment_gets_scheduled_runs_from_the_server(prefect_server, client, tmp_path):
    res = stemforge(prefect_server, "deploy", "--config", TINY, "--flow", "build", "--name", "every-5",
                    "--cron", "*/5 * * * *", "--out", str(tmp_path), "-q")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["name"] == "build-dataset/every-5" and info["cron"] == "*/5 * * * *"

    deployment = client.read_deployment(UUID(info["id"]))
    assert [s.schedule.cron for s in deployment.schedules] == ["*/5 * * * *"]
    assert deployment.parameters["config"]["run"]["name"] == "tiny"  # the resolved preset, not a path
    assert deployment.parameters["out_root"] == str(tmp_path) and deployment.parameters["name"] is None
    assert deployment.entrypoint == "flows.cycle.build_dataset"

    scheduled = wait_for("the scheduler's runs", lambda: runs_of(client, deployment.id, "SCHEDULED"), 60)
    starts = sorted(r.expected_start_time for r in scheduled)
    assert all(r.auto_scheduled for r in scheduled)
    assert all(t.minute % 5 == 0 and t.second == 0 for t in starts)  # on the cron's grid
    assert all((b - a).total_seconds() % 300 == 0 for a, b in zip(starts, starts[1:]))
    assert starts[0].timestamp() > time.time() - 300


@pytest.mark.timeout(420)
def test_serve_runs_the_deployed_tiny_build_and_stops_cleanly(prefect_server, client, tmp_path):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.deployments import run_deployment

    out = tmp_path / "runs"
    res = stemforge(prefect_server, "deploy", "--config", TINY, "--set", "engine.backend=inprocess", "--flow", "build",
                    "--name", "tiny-build", "--cron", "0 3 1 1 *", "--out", str(out), "--run-name", "sched", "-q")
    assert res.returncode == 0, res.stderr
    deployment_id = UUID(json.loads(res.stdout.strip().splitlines()[-1])["id"])
    before = client.read_deployment(deployment_id)
    assert before.parameters["config"]["engine"]["backend"] == "inprocess"  # --set is part of what was deployed

    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        serve = subprocess.Popen([STEMFORGE, "serve", "--name", "tiny-build"], cwd=ROOT, stdout=sink,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env=prefect_server.env(PREFECT_RUNNER_POLL_FREQUENCY="2"))
    try:
        wait_for("serve to start", lambda: "serving " in log.read_text() or serve.poll() is not None, 120, 0.5)
        assert serve.poll() is None, log.read_text()
        assert "build-dataset/tiny-build" in log.read_text() and "every-5" not in log.read_text()

        run = run_deployment("build-dataset/tiny-build", timeout=0)
        run = wait_for("the triggered run to finish",
                       lambda: (fr := client.read_flow_run(run.id)).state.is_final() and fr, 180)
        assert run.state.is_completed(), f"{run.state}\n{log.read_text()[-4000:]}"

        # serving re-applied the deployment from what the server held: parameters and schedule unchanged
        after = client.read_deployment(deployment_id)
        assert after.parameters == before.parameters and not after.paused
        assert [s.schedule.cron for s in after.schedules] == ["0 3 1 1 *"]

        marker = json.loads((out / "sched" / "steps" / "synthetic.json").read_text())
        assert marker["outputs"]["counts"] == {"train": 24, "val": 4, "test": 4}
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["build-sched"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        assert len(artifacts) == 1
        markdown = artifacts[0].data
        for split, n in {"train": 24, "val": 4, "test": 4}.items():
            assert f"- {split}: {n} tuples" in markdown, markdown
        assert str(out / "sched") in markdown

        listed = stemforge(prefect_server, "flows", "runs", "--flow", "build", "--json")
        assert listed.returncode == 0, listed.stderr
        row = next(r for r in json.loads(listed.stdout) if r["id"] == str(run.id))
        assert row["state"] == "Completed" and row["flow"] == "build" and row["deployment"] == "tiny-build"
        assert row["run_name"] == "sched" and row["duration_s"] > 0 and row["start_time"]

        # SIGTERM with a run in progress: a full rebuild with 50x the training tuples, so it is still running when the
        # signal lands (the deployed size finished within the 2 s below once, on a fast phase of the machine)
        big = json.loads(json.dumps(before.parameters["config"]))
        big["engine"]["synthetic_counts"]["train"] = 1200
        second = run_deployment("build-dataset/tiny-build", parameters={"restart": True, "config": big}, timeout=0)
        wait_for("the second run to start", lambda: client.read_flow_run(second.id).state.is_running(), 60, 0.5)
        time.sleep(2)
        os.kill(serve.pid, signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, log.read_text()[-4000:]
        state = wait_for("the second run to be cancelled",
                         lambda: (s := client.read_flow_run(second.id).state).is_final() and s, 30)
        assert state.is_cancelled(), f"{state}\n{log.read_text()[-4000:]}"
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


@pytest.mark.timeout(240)
def test_bad_config_and_unknown_names_exit_2_and_register_nothing(prefect_server, client, tmp_path):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {TINY}\nrun:\n  max_iterations: 0\n")
    res = stemforge(prefect_server, "deploy", "--config", str(bad), "--flow", "build", "--name", "bad-config")
    assert res.returncode == 2 and "run.max_iterations" in res.stderr, res.stderr
    res = stemforge(prefect_server, "deploy", "--config", TINY, "--set", "engine.nope=1", "--flow", "build",
                    "--name", "bad-config")
    assert res.returncode == 2, res.stderr
    res = stemforge(prefect_server, "deploy", "--config", TINY, "--flow", "build", "--name", "bad-config",
                    "--cron", "every night")
    assert res.returncode == 2 and "cron" in res.stderr.lower(), res.stderr
    assert client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["bad-config"]))) == []

    res = stemforge(prefect_server, "serve", "--name", "no-such-deployment")
    assert res.returncode == 2 and "no-such-deployment" in res.stderr, res.stderr


@pytest.mark.timeout(120)
def test_deploy_and_serve_without_a_server_say_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path)  # no profile that could name a server
    for args in (["deploy", "--config", TINY, "--flow", "build", "--name", "x"], ["serve"]):
        res = subprocess.run([STEMFORGE, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "PREFECT_API_URL" in res.stderr, (args, res.stderr)
