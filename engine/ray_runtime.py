"""Where Ray runs: `ray_session(cfg.engine.ray)` starts a local instance or joins a cluster, and stops only what it
started.

Why one context manager: `stemforge run` on a laptop must start its own Ray (bounded object store: Ray's default
of 30% of RAM per node is too much beside the trainers; dashboard on 127.0.0.1 only; no usage stats), the same
command inside a submitted job must join the job's cluster instead (Ray sets `RAY_ADDRESS` for the job's driver),
and a test or a caller that already initialised Ray must keep its instance: nobody shuts down a Ray it did not
start.

Token authentication (Ray 2.60): a cluster started by `ray start` turns token auth on when `~/.ray/auth_token`
exists, and a new local `ray.init()` turns it on by default (generating the token). A driver that joins with an
explicit address does *not* look for the token by itself, so `apply_auth_mode` settles `RAY_AUTH_MODE` before any
Ray call: an explicit `RAY_AUTH_MODE` wins; otherwise `token` when a token is available, else `disabled`.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("stemforge.ray")

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_FILE = Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class RaySession:
    """What `ray_session` connected to: small and JSON-able (it goes into the run report)."""

    mode: str                 # "started" (a local instance this session owns), "joined" (an existing cluster), "reused"
    address: str              # the GCS address
    dashboard_url: str | None
    startup_s: float          # wall time of ray.init (0 when reused)
    cpus: float
    gpus: float
    nodes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_available() -> bool:
    """A token Ray would find: `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).is_file() if path else TOKEN_FILE.is_file()


def auth_mode(starting_local: bool = False) -> str:
    """The `RAY_AUTH_MODE` every Ray process of this session uses (see the module docstring)."""
    explicit = os.environ.get(AUTH_MODE_ENV)
    if explicit:
        return explicit
    # a new local instance follows Ray's own default (token, generated if missing); joining follows `ray start`
    return "token" if starting_local or token_available() else "disabled"


def apply_auth_mode(starting_local: bool = False) -> str:
    """Set `RAY_AUTH_MODE` in this process (inherited by the processes Ray starts) and refresh Ray's cached config."""
    mode = auth_mode(starting_local)
    if os.environ.get(AUTH_MODE_ENV) != mode:
        os.environ[AUTH_MODE_ENV] = mode
        try:  # Ray caches its config at import; its own token setup refreshes it the same way
            from ray._raylet import Config

            Config.initialize("")
        except Exception as exc:  # noqa: BLE001 - an older/newer Ray without it reads the env at init anyway
            log.debug("could not refresh Ray's config after setting %s: %s", AUTH_MODE_ENV, exc)
    return mode


def ray_env() -> dict[str, str]:
    """Environment every Ray process started for stemforge gets: usage stats off, the session's auth mode."""
    return {"RAY_USAGE_STATS_ENABLED": "0", AUTH_MODE_ENV: auth_mode()}


def _describe(ray: Any, mode: str, startup_s: float) -> RaySession:
    ctx = ray.get_runtime_context()
    try:
        gcs = ctx.gcs_address
    except Exception:  # noqa: BLE001 - Ray Client sessions have no GCS address
        gcs = os.environ.get("RAY_ADDRESS", "")
    res = ray.cluster_resources()
    dash = None
    try:
        from ray._private.worker import global_worker

        node = getattr(global_worker, "node", None)
        dash = getattr(node, "address_info", {}).get("webui_url") if node is not None else None
    except Exception:  # noqa: BLE001 - informational only
        dash = None
    return RaySession(mode=mode, address=str(gcs), dashboard_url=dash or None, startup_s=round(startup_s, 3),
                      cpus=float(res.get("CPU", 0.0)), gpus=float(res.get("GPU", 0.0)),
                      nodes=sum(1 for n in ray.nodes() if n.get("Alive")))


def _quiet_ray_loggers() -> None:
    """Ray's own INFO lines (start banners, autoscaler notes) stay in Ray's log files, not the user's stderr."""
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "ray._private"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _load_torch_before_ray() -> None:
    """Load torch's native libraries before Ray's. Measured: a `stemforge run` whose driver imported Ray first died
    as a Ray job's driver at the first separator step with "Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so"
    (MKL re-opening libtorch_cpu after Ray's libraries had taken the process's static TLS); with torch loaded first
    the same job ran. Every engine run needs torch anyway."""
    try:
        import torch  # noqa: F401
    except ImportError:  # a Ray-only installation: nothing to order
        pass


@contextmanager
def ray_session(ray_cfg: Any = None) -> Iterator[RaySession]:
    """Connect this process to Ray for the block; `ray_cfg` is an `engine.config.RayConfig` (None = defaults).

    - Ray already initialised (a test's `ray_local`, a caller's session): reused, left running.
    - `address: local` and `RAY_ADDRESS` set (the driver of a submitted job): join that cluster.
    - `address: local`: start a local instance with the configured bounds; shut down on exit.
    - any other address (`auto`, `HOST:PORT`, `ray://...`): join it; on exit only this driver disconnects.
    """
    _load_torch_before_ray()
    import ray

    if ray_cfg is None:
        from engine.config import RayConfig

        ray_cfg = RayConfig()
    if ray.is_initialized():
        info = _describe(ray, "reused", 0.0)
        log.debug("ray: reusing the initialised Ray at %s (%g CPUs, %g GPUs, %d nodes)", info.address, info.cpus,
                  info.gpus, info.nodes)  # every step's nested session: debug, not one line per step
        yield info
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = ray_cfg.address
    job_address = os.environ.get("RAY_ADDRESS")
    if address == "local" and job_address:
        log.info("ray: RAY_ADDRESS=%s is set (inside a Ray job?): joining that cluster instead of starting one",
                 job_address)
        address = job_address
    verbose = logging.getLogger("stemforge").getEffectiveLevel() <= logging.INFO
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": verbose}
    _quiet_ray_loggers()
    t0 = time.perf_counter()
    if address == "local":
        apply_auth_mode(starting_local=True)
        dash_port = ray_cfg.dashboard_port
        kwargs: dict[str, Any] = {
            "address": "local",  # never attach to another engineer's or user's cluster found on this machine
            "num_cpus": ray_cfg.num_cpus, "num_gpus": ray_cfg.num_gpus,
            "object_store_memory": int(ray_cfg.object_store_mb) * 1024 * 1024,
            "include_dashboard": dash_port != 0, "dashboard_host": "127.0.0.1",
        }
        if dash_port:
            kwargs["dashboard_port"] = int(dash_port)
        if ray_cfg.temp_dir:
            kwargs["_temp_dir"] = str(Path(ray_cfg.temp_dir).resolve())
        ray.init(**kwargs, **common)
        mode = "started"
    else:
        apply_auth_mode(starting_local=False)
        ray.init(address=address, **common)
        mode = "joined"
    startup = time.perf_counter() - t0
    try:
        info = _describe(ray, mode, startup)
        log.info("ray: %s %s in %.1f s (%g CPUs, %g GPUs, %d nodes%s)", "started a local instance" if mode == "started"
                 else "joined", info.address, startup, info.cpus, info.gpus, info.nodes,
                 f", dashboard http://{info.dashboard_url}" if info.dashboard_url else "")
        yield info
    finally:
        ray.shutdown()  # a started instance stops; a joined cluster only loses this driver
