"""`stemforge submit` and `stemforge jobs list|status|logs|stop`: run stemforge commands as Ray jobs on a cluster.

Thin click front: everything Ray lives in engine/jobs.py. The dashboard address comes from `--address`, else
`RAY_API_SERVER_ADDRESS` (what `ray job` reads too), else http://127.0.0.1:8265.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from flows.common import EXIT_FAILURE, EXIT_USAGE, fail, setup_logging

DEFAULT_ADDRESS = "http://127.0.0.1:8265"


def _address_option(func: Any) -> Any:
    return click.option("--address", default=lambda: os.environ.get("RAY_API_SERVER_ADDRESS", DEFAULT_ADDRESS),
                        show_default="RAY_API_SERVER_ADDRESS or " + DEFAULT_ADDRESS,
                        help="Ray dashboard address of the cluster, e.g. http://HEAD:8265.")(func)


def _log_options(func: Any) -> Any:
    func = click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")(func)
    return click.option("--verbose", "-v", count=True, help="Debug logging.")(func)


@click.command("submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_address_option
@click.option("--working-dir", default=".", show_default=True, type=click.Path(file_okay=False, exists=True),
              help="Checkout uploaded as the job's working dir (.venv, runs/, .git and .gitignore'd files left out).")
@click.option("--wait", "wait_", is_flag=True, help="Follow the job's log until it ends; exit 1 unless it succeeded.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Extra environment variable for the job. Repeatable.")
@click.option("--python", default="python", show_default=True, help="Python on the cluster that has stemforge's dependencies.")
@click.option("--submission-id", default=None, help="Job id to use (default: Ray picks one).")
@click.option("--timeout", "timeout_s", type=float, default=None, help="With --wait: give up waiting after this many seconds.")
@_log_options
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def submit(address: str, working_dir: str, wait_: bool, env: tuple[str, ...], python: str, submission_id: str | None,
           timeout_s: float | None, quiet: bool, verbose: int, argv: tuple[str, ...]) -> None:
    """Submit `stemforge ARGV...` as a Ray job, e.g. `stemforge submit --address http://HEAD:8265 -- run --config X`."""
    from engine.jobs import JobError, submit as submit_job, wait

    setup_logging(quiet, verbose)
    extra: dict[str, str] = {}
    for item in env:
        if "=" not in item:
            fail(f"--env {item}: expected KEY=VALUE", EXIT_USAGE)
        k, v = item.split("=", 1)
        extra[k] = v
    try:
        job_id = submit_job(address, list(argv), working_dir, extra, submission_id=submission_id, python=python)
    except JobError as exc:
        fail(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILURE)
    click.echo(json.dumps({"submission_id": job_id, "address": address}))
    if not wait_:
        return
    try:
        info = wait(address, job_id, timeout_s=timeout_s, on_log=lambda t: (sys.stderr.write(t), sys.stderr.flush()))
    except JobError as exc:
        fail(str(exc), EXIT_FAILURE)
    click.echo(json.dumps({"submission_id": job_id, "status": info["status"], "message": info["message"]}))
    if info["status"] != "SUCCEEDED":
        sys.exit(EXIT_FAILURE)


@click.group("jobs")
def jobs() -> None:
    """List, inspect, read the logs of and stop Ray jobs (those of `stemforge submit` and `ray job submit`)."""


def _call(fn: Any, *args: Any) -> Any:
    from engine.jobs import JobError

    try:
        return fn(*args)
    except JobError as exc:
        fail(str(exc), EXIT_FAILURE)


@jobs.command("list")
@_address_option
@_log_options
def jobs_list(address: str, quiet: bool, verbose: int) -> None:
    """One JSON line per job: id, status, entrypoint, times."""
    from engine.jobs import list_jobs

    setup_logging(quiet, verbose)
    for job in _call(list_jobs, address):
        click.echo(json.dumps(job))


@jobs.command("status")
@_address_option
@_log_options
@click.argument("submission_id")
def jobs_status(address: str, quiet: bool, verbose: int, submission_id: str) -> None:
    """The job's status and details as JSON."""
    from engine.jobs import status

    setup_logging(quiet, verbose)
    click.echo(json.dumps(_call(status, address, submission_id)))


@jobs.command("logs")
@_address_option
@_log_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.argument("submission_id")
def jobs_logs(address: str, quiet: bool, verbose: int, follow: bool, submission_id: str) -> None:
    """The job driver's log on stdout."""
    from engine.jobs import logs, wait

    setup_logging(quiet, verbose)
    if follow:
        _call(lambda: wait(address, submission_id, on_log=lambda t: (sys.stdout.write(t), sys.stdout.flush())))
        return
    sys.stdout.write(_call(logs, address, submission_id))


@jobs.command("stop")
@_address_option
@_log_options
@click.argument("submission_id")
def jobs_stop(address: str, quiet: bool, verbose: int, submission_id: str) -> None:
    """Stop a running job (exit 1 if it had already ended)."""
    from engine.jobs import stop

    setup_logging(quiet, verbose)
    stopped = _call(stop, address, submission_id)
    click.echo(json.dumps({"submission_id": submission_id, "stopped": stopped}))
    if not stopped:
        sys.exit(EXIT_FAILURE)
