"""A real Prefect server on this machine for tests: `prefect server start` on 127.0.0.1 and a free port.

It has a PREFECT_HOME of its own (a temp dir: its own SQLite database, no profile of the user's), analytics off and
no UI. It runs in its own process group (the server starts worker processes of its own), so teardown stops exactly
that group: SIGTERM, then SIGKILL after a grace period. Nothing here sets PREFECT_API_URL for the test process:
tests point at the server with `prefect.settings.temporary_settings` in-process or with `server_env()` for the
processes they start, so the other tests keep their ephemeral Prefect.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

PREFECT = str(Path(sys.executable).parent / "prefect")
START_TIMEOUT_S = 150.0  # first start creates the database: ~15 s on an idle machine, a minute on a busy one


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path
    log: Path
    pid: int

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server (a CLI, `stemforge serve`)."""
        env = dict(os.environ)
        env.update(PREFECT_API_URL=self.api_url, PREFECT_HOME=str(self.home / "client"),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.update(extra)
        return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever of it is left after `grace_s`. The leader is
    reaped as it goes (an unreaped zombie would keep the group alive)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not _group_alive(proc.pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@contextmanager
def prefect_server(home: Path) -> Iterator[PrefectServer]:
    """Start a server with its state under `home`, wait for /api/health, yield it, stop its process group."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # the server must not try to talk to some other server
    env.update(PREFECT_HOME=str(home / "server"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false")
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(api_url):
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield PrefectServer(api_url=api_url, home=home, log=log, pid=proc.pid)
    finally:
        _stop_group(proc)


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy (the server records runs from the clients' events)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
