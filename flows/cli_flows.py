"""`stemforge deploy`, `stemforge serve` and `stemforge flows runs`: scheduled stemforge flows on a Prefect server.

Thin click front: everything Prefect lives in flows/deploy.py. Both `deploy` and `serve` need a server
(PREFECT_API_URL); `flows runs` reads whichever API Prefect is configured for.
"""
from __future__ import annotations

import json
from typing import Any

import click

from flows.common import EXIT_FAILURE, EXIT_USAGE, config_options, fail

FLOW_KEYS = ("build", "cycle", "final", "run")


@click.command("deploy")
@click.option("--flow", "flow_key", type=click.Choice(FLOW_KEYS), required=True,
              help="build: corpus + synthetic shards; cycle: the relabel cycle; final: the final separator and judge; run: the whole engine.")
@click.option("--name", required=True, help="Deployment name (unique per flow; deploying it again updates it).")
@click.option("--cron", default=None, metavar="EXPR",
              help='Cron schedule, e.g. "0 2 * * *" (02:00 every day); none: runs only when triggered.')
@click.option("--timezone", "tz", default=None, metavar="TZ", help="IANA time zone of --cron, e.g. Europe/Berlin (default: UTC).")
@click.option("--out", "out_root", default=None, help="Runs folder of the flow runs (default: run.out_root); a "
              "relative path resolves in the working directory of `stemforge serve`.")
@click.option("--run-name", default=None, help="Run name (default: run.name); each flow run resumes runs/<name>/.")
@config_options
def deploy(cfg: Any, flow_key: str, name: str, cron: str | None, tz: str | None, out_root: str | None,
           run_name: str | None) -> None:
    """Register a (scheduled) deployment of a stemforge flow with the resolved config on the Prefect server.

    The config is resolved and validated here, once: the deployment stores it as JSON, so later edits of the YAML
    do not change what runs until you deploy again. Prints the deployment as JSON."""
    from flows.deploy import DeployError, deploy as register

    try:
        info = register(flow_key, cfg.model_dump(mode="json"), name, cron=cron, tz=tz, out_root=out_root,
                        run_name=run_name)
    except DeployError as exc:
        fail(str(exc), EXIT_USAGE)
    except Exception as exc:  # the server refused or is unreachable: report it, not a traceback
        fail(f"could not register the deployment: {type(exc).__name__}: {exc}", EXIT_FAILURE)
    click.echo(json.dumps(info))


@click.command("serve")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="Serve only this deployment (NAME or FLOW-NAME/NAME); repeatable. Default: every stemforge deployment.")
@click.option("--limit", type=click.IntRange(min=1), default=1, show_default=True,
              help="Flow runs executing at once; later ones wait until a slot frees.")
def serve(names: tuple[str, ...], limit: int) -> None:
    """Execute the scheduled and triggered runs of the stemforge deployments on the Prefect server; runs until stopped.

    This is the long-running process to keep up under systemd or Kubernetes (restart it on failure): the server
    only schedules runs, this process executes them, each in a subprocess, logs streamed to stdout. It reads the
    deployments from the server (registered with `stemforge deploy`, possibly from another machine) and keeps
    their parameters and schedules as they are. SIGTERM or SIGINT stops it cleanly: runs in progress are cancelled
    (a later run of the same deployment resumes the run directory), schedules stay active and runs that come due
    while it is down wait for the next start."""
    from flows.deploy import DeployError, api_url, serve as serve_deployments

    try:
        serve_deployments(names, limit=limit, on_start=lambda served: click.echo(
            f"serving {', '.join(served)} from {api_url()} (at most {limit} run(s) at once); SIGTERM/Ctrl-C stops",
            err=True))
    except DeployError as exc:
        fail(str(exc), EXIT_USAGE)
    except Exception as exc:  # e.g. the server is unreachable: one line and exit 1, for the service manager to restart
        fail(f"serve stopped: {type(exc).__name__}: {exc}", EXIT_FAILURE)


@click.group("flows")
def flows_group() -> None:
    """Inspect the runs of the stemforge flows on the Prefect API."""


@flows_group.command("runs")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Runs to list.")
@click.option("--flow", "flow_key", type=click.Choice(FLOW_KEYS), default=None, help="Only runs of this flow.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def runs(limit: int, flow_key: str | None, as_json: bool) -> None:
    """Recent flow runs, newest first: name, flow, deployment, stemforge run, state, start time, duration."""
    from flows.deploy import DeployError, recent_runs

    try:
        rows = recent_runs(limit=limit, flow_key=flow_key)
    except DeployError as exc:
        fail(str(exc), EXIT_USAGE)
    except Exception as exc:
        fail(f"could not read flow runs: {type(exc).__name__}: {exc}", EXIT_FAILURE)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows]))
        return
    if not rows:
        click.echo("no runs of the stemforge flows yet", err=True)
        return
    header = ("NAME", "FLOW", "DEPLOYMENT", "RUN", "STATE", "START", "DURATION")
    table = [header] + [(r.name, r.flow, r.deployment or "-", r.run_name or "-", r.state,
                         (r.start_time or "-")[:19], "-" if r.duration_s is None else f"{r.duration_s:.1f}s")
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
