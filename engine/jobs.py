"""Submitting `stemforge` commands to a Ray cluster as Ray jobs (`stemforge submit`, `stemforge jobs ...`).

Why the Job Submission SDK: the job's driver runs *on* the cluster (it survives the submitting laptop going away,
its log stays retrievable with `jobs logs`), and the runtime environment ships the code: the working directory
(minus the virtualenv, run outputs, git data: `DEFAULT_EXCLUDES`, on top of the `.gitignore` Ray already honours)
is uploaded and becomes the job's current directory, so the entrypoint `python -m flows.cli ...` imports this
checkout's code. A `--config FILE` is shipped too: its text travels in the job's environment and the entrypoint
writes it to a temporary file first, so a config outside the working directory works as well as one inside it.
Inside the job Ray sets `RAY_ADDRESS`; `engine.ray_runtime.ray_session` joins that cluster instead of starting one.
"""
from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from engine.ray_runtime import apply_auth_mode

log = logging.getLogger("stemforge.jobs")

# gitignore-style patterns (Ray's `excludes`); a leading "/" anchors at the working dir's top
DEFAULT_EXCLUDES = ["/.venv", "/venv", "/runs", "/bench_out", "/bench/out", "/bench/.venv-scaper", "/data", "/shards",
                    "/ckpt", ".git", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                    "*.egg-info", "/build", "/dist"]
# passed on from the submitting shell when set there, with these defaults otherwise
DEFAULT_JOB_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                   "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PASSED_ENV = ("HF_HOME",)  # a local model cache (on a shared filesystem for a real cluster)
CONFIG_ENV = "STEMFORGE_JOB_CONFIG"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
T = TypeVar("T")


class JobError(RuntimeError):
    """A submission or job query that failed; the message names the address and the job. `usage` marks a problem
    with the command line itself (nothing sent)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class _DropDefaultExcludeNotes(logging.Filter):
    """Ray 2.60 warns on every upload that `.git`/`.venv` are now excluded by default: we exclude them anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is now ignored by default" not in record.getMessage()


def _quiet_sdk_logs() -> None:
    """The SDK's INFO lines (packaging, "Ignoring upload ...") stay off the user's stderr; warnings still show."""
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                 "ray._private.runtime_env.packaging"):  # the SDK modules set INFO on their own loggers
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
    wd_logger = logging.getLogger("ray._private.runtime_env.working_dir")
    if not any(isinstance(f, _DropDefaultExcludeNotes) for f in wd_logger.filters):
        wd_logger.addFilter(_DropDefaultExcludeNotes())


def client(address: str) -> Any:
    """A `JobSubmissionClient` for the dashboard at `address` (`http://HEAD:8265`), with this session's auth mode."""
    apply_auth_mode()
    from ray.job_submission import JobSubmissionClient

    _quiet_sdk_logs()

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection errors come in several types
        raise JobError(f"cannot reach the Ray dashboard at {address}: {exc}") from exc


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(`--config` path or None, the other arguments) of a stemforge command line."""
    rest: list[str] = []
    config: str | None = None
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            config = next(it, None)
            if config is None:
                raise JobError("--config needs a file", usage=True)
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return config, rest


def build_submission(argv: list[str], working_dir: str | Path = ".", env: dict[str, str] | None = None,
                     excludes: list[str] | None = None, python: str = "python") -> tuple[str, dict[str, Any]]:
    """(entrypoint, runtime_env) for running `stemforge <argv>` from the uploaded working dir."""
    if not argv:
        raise JobError("nothing to run: give a stemforge command after `--`, e.g. `-- run --config X`", usage=True)
    wd = Path(working_dir).resolve()
    if not wd.is_dir():
        raise JobError(f"--working-dir {wd}: not a directory", usage=True)
    if not (wd / "flows" / "cli.py").is_file():
        raise JobError(f"--working-dir {wd}: not a stemforge checkout (no flows/cli.py); the job runs its code from there", usage=True)
    config, rest = split_config(list(argv))
    job_env = {k: os.environ.get(k, v) for k, v in DEFAULT_JOB_ENV.items()}
    job_env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    job_env.update(env or {})
    command = " ".join(shlex.quote(a) for a in [python, "-m", "flows.cli", *rest])
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise JobError(f"--config {config}: no such file", usage=True)
        import yaml

        from storage.configio import read_preset

        # resolved here (`extends:` chains merged), so the shipped copy needs no other preset file
        job_env[CONFIG_ENV] = yaml.safe_dump(read_preset(path), sort_keys=False)
        # the config file travels in the environment; the job writes it where its --config can read it
        command = (f'cfg="$(mktemp --suffix=.yaml)" && printf %s "${CONFIG_ENV}" > "$cfg" && '
                   f'{command} --config "$cfg"')  # appended: `--config` belongs to the (sub)command
    runtime_env = {"working_dir": str(wd), "excludes": list(DEFAULT_EXCLUDES if excludes is None else excludes),
                   "env_vars": job_env}
    return command, runtime_env


def submit(address: str, argv: list[str], working_dir: str | Path = ".", env: dict[str, str] | None = None,
           submission_id: str | None = None, python: str = "python", agent_wait_s: float = 60.0) -> str:
    """Submit `stemforge <argv>` as a Ray job; returns its submission id."""
    entrypoint, runtime_env = build_submission(argv, working_dir, env, python=python)
    c = client(address)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return c.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                                metadata={"stemforge": "1", "command": " ".join(argv)[:200]})
        except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError/ValueError/HTTP errors
            # a cluster that has just started has no job agent registered yet: that passes within seconds
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                log.info("ray: the cluster's job agent is not up yet; retrying the submission")
                time.sleep(1.0)
                continue
            raise JobError(f"submitting to {address} failed: {exc}") from exc


def _details(d: Any) -> dict[str, Any]:
    status = getattr(d.status, "value", str(d.status))
    return {"submission_id": d.submission_id, "job_id": d.job_id, "status": str(status), "entrypoint": d.entrypoint,
            "message": d.message, "start_time": d.start_time, "end_time": d.end_time,
            "metadata": dict(d.metadata or {})}


def _ask(address: str, what: str, call: Callable[[Any], T]) -> T:
    """One Job Submission API call; any failure becomes a JobError naming what was asked of which cluster."""
    try:
        return call(client(address))
    except JobError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise JobError(f"{what} at {address}: {exc}") from exc


def status(address: str, submission_id: str) -> dict[str, Any]:
    """The job's status and details (JSON-able)."""
    return _ask(address, f"job {submission_id}", lambda c: _details(c.get_job_info(submission_id)))


def list_jobs(address: str) -> list[dict[str, Any]]:
    """Every job the cluster knows, oldest first."""
    jobs = _ask(address, "listing jobs", lambda c: [_details(d) for d in c.list_jobs()])
    return sorted(jobs, key=lambda j: j["start_time"] or 0)


def logs(address: str, submission_id: str) -> str:
    """The job driver's whole log so far."""
    return _ask(address, f"logs of job {submission_id}", lambda c: c.get_job_logs(submission_id))


def stop(address: str, submission_id: str) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    return _ask(address, f"stopping job {submission_id}", lambda c: bool(c.stop_job(submission_id)))


def wait(address: str, submission_id: str, timeout_s: float | None = None, poll_s: float = 2.0,
         on_log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Poll until the job ends (SUCCEEDED, FAILED, STOPPED); `on_log` gets each new piece of the driver's log.
    Raises JobError on timeout (the job keeps running)."""
    c = client(address)
    t0 = time.monotonic()
    seen = 0
    while True:
        info = _details(c.get_job_info(submission_id))
        if on_log is not None:
            text = c.get_job_logs(submission_id)
            if len(text) > seen:
                on_log(text[seen:])
                seen = len(text)
        if info["status"] in TERMINAL:
            return info
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise JobError(f"job {submission_id} at {address} still {info['status']} after {timeout_s:.0f} s")
        time.sleep(poll_s)
