"""`ray_session`: a local start with a bounded object store and the dashboard on 127.0.0.1 (stopped afterwards, no
Ray banners on stderr) and reuse of an already-initialised Ray. Real Ray throughout; the local start runs in a
child process, because the pytest process may already hold the session's `ray_local` instance. Joining a running
cluster (by address and by RAY_ADDRESS) is tested on the two-node cluster in test_submit_cluster.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ray_cluster import RayCluster, cluster_env, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, logging, os, sys
    sys.path.insert(0, {root!r})
    import ray
    from engine.config import RayConfig
    from engine.ray_runtime import ray_session
    logging.basicConfig(level=logging.INFO)  # what a user running with -v sees
    out = []
    for kwargs in {configs!r}:
        with ray_session(RayConfig(**kwargs)) as s:
            res = ray.cluster_resources()
            out.append({{**s.to_dict(), "object_store": res.get("object_store_memory"), "inside": ray.is_initialized(),
                         "temp": ray._private.worker._global_node.get_temp_dir_path()}})
        out[-1]["after"] = ray.is_initialized()
    print("RESULT " + json.dumps(out))
""")


def _probe(configs: list[dict], env: dict[str, str] | None = None, timeout: float = 120) -> tuple[list[dict], str]:
    res = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT), configs=configs)], capture_output=True,
                         text=True, timeout=timeout, env=env or cluster_env(), cwd=str(ROOT))
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), res.stderr


@pytest.mark.timeout(180)
def test_local_session_is_bounded_on_loopback_and_stopped_after(tmp_path):
    temp = Path("/tmp") / f"sfrt{os.getpid()}"  # short: Ray's socket paths must stay < 108 bytes
    port = free_port()
    try:
        [info], stderr = _probe([{"num_cpus": 1, "object_store_mb": 96, "dashboard_port": port, "temp_dir": str(temp)}])
        assert info["mode"] == "started" and info["inside"] and not info["after"]
        assert info["cpus"] == 1.0 and info["nodes"] == 1
        assert info["object_store"] == 96 * 1024 * 1024  # bounded, not 30% of RAM
        assert info["dashboard_url"] == f"127.0.0.1:{port}"  # loopback only
        assert info["startup_s"] > 0 and info["temp"] == str(temp)
        assert "ray: started a local instance" in stderr  # start-up time in our log ...
        assert "Started a local Ray instance" not in stderr  # ... Ray's own banner is not
        assert "Token authentication is" not in stderr  # the auth mode was settled, not warned about
        assert list(temp.glob("session_*")), "the session dir is where temp_dir said"
        cluster = RayCluster(temp_dir=temp, port=0, dashboard_port=0)
        deadline = time.monotonic() + 15
        while cluster.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cluster.processes() == []  # the instance it started is gone with it
    finally:
        RayCluster(temp_dir=temp, port=0, dashboard_port=0).stop(grace_s=2)


@pytest.mark.timeout(120)
def test_an_initialised_ray_is_reused_and_left_running(ray_local):
    from engine.config import RayConfig
    from engine.ray_runtime import ray_session

    before = ray_local.get_runtime_context().gcs_address
    with ray_session(RayConfig(num_cpus=1, object_store_mb=64)) as s:
        assert s.mode == "reused" and s.startup_s == 0.0
        assert s.cpus == ray_local.cluster_resources()["CPU"]  # the fixture's 2, not the config's 1
        assert ray_local.get_runtime_context().gcs_address == before
    assert ray_local.is_initialized()
    assert ray_local.get(ray_local.remote(lambda: 7).remote()) == 7
