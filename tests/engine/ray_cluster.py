"""A real multi-node Ray cluster on this machine for tests: a head and worker nodes started with `ray start`.

Every node has one CPU and a bounded object store; ports are chosen free at runtime; each node has its own temp
dir, all under one directory of the cluster's, so teardown can find exactly this cluster's processes:
those whose command line carries the temp dir, and their children (Ray renames worker processes `ray::...`).
They get SIGTERM, then SIGKILL after a grace period (gcs_server may ignore SIGTERM for seconds). Never `ray stop`:
it stops every Ray process on the machine, other people's clusters included.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.ray_runtime import ray_env

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_env() -> dict[str, str]:
    """The environment of every process talking to the test cluster: this venv first on PATH (the job's `python`
    is this one), usage stats off, one auth mode for all (see engine/ray_runtime.py)."""
    env = dict(os.environ)
    env.update(ray_env())
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)  # never let a test process attach to some other cluster by accident
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


@dataclass
class RayCluster:
    temp_dir: Path
    port: int
    dashboard_port: int
    object_store_bytes: int = 200 * 1024 * 1024
    env: dict[str, str] = field(default_factory=cluster_env)
    worker_raylets: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        """GCS address (for `ray.init(address=...)`, `engine.ray.address`)."""
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        """Job API address (for `stemforge submit --address`, `ray job submit --address`)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray_start(self, *args: str) -> None:
        # every fixed default port (agent HTTP 52365, ...) is taken by the first cluster on a machine: pick free ones
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        res = subprocess.run([RAY, "start", *args, *ports, "--num-cpus=1", f"--object-store-memory={self.object_store_bytes}",
                              "--disable-usage-stats"], env=self.env, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")

    def raylets(self) -> list[int]:
        return sorted(pid for pid in self.processes() if Path(_cmdline(pid)[0]).name == "raylet")

    def start_head(self) -> None:
        self._ray_start("--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={self.dashboard_port}", f"--temp-dir={self.temp_dir}",
                        f"--ray-client-server-port={free_port()}")
        self.wait_dashboard()

    def add_worker(self) -> int:
        """Start a worker node; returns its raylet's PID (the one to kill to lose the node)."""
        before = set(self.raylets())
        # a temp dir of its own (inside the cluster's, so teardown still finds it): with the head's session dir both
        # nodes unpacked a job's working dir into the same folder at once and the driver saw files vanish
        own = self.temp_dir / f"w{len(self.worker_raylets)}"
        own.mkdir(exist_ok=True)
        try:
            self._ray_start(f"--address={self.address}", f"--temp-dir={own}")
        except RuntimeError as exc:
            # `ray start` gives a joining raylet a fixed 30 s to register with the GCS (ray/_private/node.py) and
            # then exits with an error, leaving the processes it started running (`shutdown_at_exit` is off for a
            # non-blocking start); on a loaded machine (one full `make test` hit it) registration can take longer.
            # Accept such a node once the dashboard counts it alive; else fail as before.
            late = sorted(set(self.raylets()) - before)
            if "timed out during startup" not in str(exc) or not late:
                raise
            try:
                self.wait_nodes(2 + len(self.worker_raylets), timeout_s=90.0)
            except RuntimeError:
                raise exc from None
            self.worker_raylets.append(late[0])
            return late[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = sorted(set(self.raylets()) - before)
            if new:
                self.worker_raylets.append(new[0])
                return new[0]
            time.sleep(0.2)
        raise RuntimeError("worker node started but its raylet was not found")

    def _get(self, path: str, timeout_s: float = 5.0) -> bytes:
        """GET on the dashboard with this session's auth header (token mode needs it)."""
        import urllib.request

        from engine.ray_runtime import apply_auth_mode

        apply_auth_mode()
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

        req = urllib.request.Request(f"{self.dashboard}{path}", headers=get_auth_headers_if_auth_enabled({}))
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.read()

    def wait_dashboard(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self._get("/api/version", 2.0)
                return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"dashboard {self.dashboard} did not come up in {timeout_s:.0f} s: {last}")

    def wait_nodes(self, n: int, timeout_s: float = 60.0) -> None:
        """Until the dashboard reports `n` alive nodes."""
        import json

        deadline = time.monotonic() + timeout_s
        alive, last = 0, None
        while time.monotonic() < deadline:
            try:
                data = json.loads(self._get("/nodes?view=summary"))
                alive = sum(1 for node in data["data"]["summary"] if node["raylet"]["state"] == "ALIVE")
                if alive >= n:
                    return
            except Exception as exc:  # noqa: BLE001 - the endpoint may not answer while a node joins
                last = exc
            time.sleep(0.5)
        raise RuntimeError(f"cluster has {alive} alive nodes after {timeout_s:.0f} s, wanted {n} ({last})")

    def processes(self) -> list[int]:
        """PIDs of this cluster's processes: their command line carries the temp dir (children: see `stop`)."""
        mark = str(self.temp_dir)
        gcs = f":{self.port}"  # the Ray Client server `ray start --head` spawns carries only the GCS address

        def ours(cmd: list[str]) -> bool:
            return any(mark in a for a in cmd) or (self.port > 0 and any(
                a.startswith("--address=") and a.endswith(gcs) for a in cmd) and "ray.util.client.server" in cmd)

        return [pid for pid in _pids() if pid != os.getpid() and _alive(pid) and ours(_cmdline(pid))]

    def kill_raylet(self, pid: int) -> None:
        """Lose a node abruptly (kill -9 of its raylet; its workers notice and exit)."""
        os.kill(pid, signal.SIGKILL)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to this cluster's processes and their descendants, SIGKILL to what is left after `grace_s`."""
        own = set(self.processes())
        parents = {pid: _ppid(pid) for pid in _pids()}
        changed = True
        while changed:  # add descendants (Ray's workers are renamed `ray::...` and carry no temp dir)
            changed = False
            for pid, ppid in parents.items():
                if ppid in own and pid not in own and pid != os.getpid():
                    own.add(pid)
                    changed = True
        pids = sorted(own)
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        _signal([p for p in pids if _alive(p)], signal.SIGKILL)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster(workers: int = 1) -> RayCluster:
    """Head plus `workers` worker nodes, one CPU each; the caller must `stop()` it (use try/finally)."""
    temp = Path(tempfile.mkdtemp(prefix="sfray", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    cluster = RayCluster(temp_dir=temp, port=free_port(), dashboard_port=free_port())
    try:
        cluster.start_head()
        for _ in range(workers):
            cluster.add_worker()
        cluster.wait_nodes(1 + workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster
