"""Prefect deployments of the stemforge flows: register, serve, list runs.

A deployment is a flow (flows/cycle.py FLOWS: build, cycle, final, run) plus its parameters (the resolved config as JSON,
out_root, the run name) and an optional cron schedule, registered on a Prefect server. The server's scheduler
turns the schedule into flow runs; a `serve` process (a Prefect runner) executes them. The two are decoupled on
purpose: `deploy` is a one-shot command from any shell, `serve` is the long-lived service. `serve` therefore
rebuilds its runner deployments from what the server holds, keeping their parameters, schedules, paused flag and
concurrency limit, so serving never changes what was deployed.

Entrypoints are module paths (flows.cycle.<function>): the runner's flow-run processes import the installed
package, so neither command depends on the working directory it was started in. Paths inside the parameters
(a relative out_root, corpus folders) do resolve against the working directory of `serve`.
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.deployments.runner import RunnerDeployment

TAG = "stemforge"


class DeployError(Exception):
    """A deployment request that cannot be carried out (no server, unknown flow or deployment)."""


def flows() -> dict[str, "Flow[..., Any]"]:
    """The deployable flows by CLI key (build, cycle, final, run)."""
    from flows.cycle import FLOWS

    return FLOWS


def api_url() -> str:
    """PREFECT_API_URL, or a DeployError: without a server Prefect starts an ephemeral API for the length of one
    command, and nothing would turn a schedule into runs or execute them afterwards."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise DeployError("deployments need a Prefect server: start one (`prefect server start`) and set "
                          "PREFECT_API_URL, e.g. PREFECT_API_URL=http://127.0.0.1:4200/api")
    return url


def deploy(flow_key: str, config: dict[str, Any], name: str, cron: str | None = None, tz: str | None = None,
           out_root: str | None = None, run_name: str | None = None) -> dict[str, Any]:
    """Register (or update: same flow and name) a deployment of FLOWS[flow_key] on the server; returns its id.

    `cron` runs in time zone `tz` (IANA name; default UTC); without `cron` the deployment runs only when triggered."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    url = api_url()
    flow = _flow(flow_key)
    try:
        deployment = flow.to_deployment(
            name=name, schedule=Cron(cron, timezone=tz) if cron else None,
            parameters={"config": config, "out_root": out_root, "name": run_name},
            tags=[TAG, flow_key], entrypoint_type=EntrypointType.MODULE_PATH)
    except ValueError as exc:  # a bad cron expression, time zone or deployment name
        raise DeployError(f"invalid deployment: {exc}") from exc
    deployment_id = deployment.apply()
    return {"id": str(deployment_id), "name": deployment.full_name, "flow": flow_key, "cron": cron,
            "timezone": tz if cron else None, "api_url": url}


def registered(names: Iterable[str] = ()) -> list[tuple[str, "DeploymentResponse"]]:
    """(flow name, deployment) of the stemforge deployments on the server, all or those named (`NAME` or
    `FLOW-NAME/NAME`)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    wanted = set(names)
    with get_client(sync_client=True) as client:
        found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[f.name for f in flows().values()])))
        flow_of = _flow_names(client, {d.flow_id for d in found})
    every = [(flow_of[d.flow_id], d) for d in found]
    chosen = [(f, d) for f, d in every if not wanted or {d.name, f"{f}/{d.name}"} & wanted]
    missing = wanted - {d.name for _, d in chosen} - {f"{f}/{d.name}" for f, d in chosen}
    if missing:
        raise DeployError(f"no stemforge deployment named {', '.join(sorted(missing))} on the server "
                          f"(have: {', '.join(sorted(f'{f}/{d.name}' for f, d in every)) or 'none'})")
    return chosen


def runner_deployment(registered_deployment: "DeploymentResponse", flow_name: str) -> "RunnerDeployment":
    """The runner deployment that serves `registered_deployment` as it is: same parameters, schedules, paused flag,
    concurrency limit and tags (the runner re-applies it when it starts; a field left out would be reset)."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType

    d = registered_deployment
    flow = next((f for f in flows().values() if f.name == flow_name), None)
    if flow is None:
        raise DeployError(f"deployment {flow_name}/{d.name}: no stemforge flow named {flow_name!r}")
    limit: int | ConcurrencyLimitConfig | None = d.concurrency_limit
    if d.concurrency_limit is not None and d.concurrency_options is not None:
        limit = ConcurrencyLimitConfig(limit=d.concurrency_limit, **d.concurrency_options.model_dump())
    schedules = [DeploymentScheduleCreate(schedule=s.schedule, active=s.active, max_scheduled_runs=s.max_scheduled_runs,
                                          parameters=s.parameters, slug=s.slug) for s in d.schedules]
    return flow.to_deployment(name=d.name, schedules=schedules, parameters=d.parameters, paused=d.paused,
                              concurrency_limit=limit, description=d.description, tags=d.tags,
                              entrypoint_type=EntrypointType.MODULE_PATH)


def serve(names: Iterable[str] = (), limit: int | None = 1, on_start: Callable[[list[str]], None] | None = None) -> None:
    """Execute the runs of the named (default: all) stemforge deployments until SIGTERM/SIGINT; blocks.

    `limit`: flow runs executing at once (a build uses the whole machine; more runs wait, Scheduled/Late, until a
    slot frees). Schedules stay active when the process stops: runs that come due meanwhile wait for the next
    `serve` instead of being skipped. `on_start` gets the full names of the deployments being served."""
    api_url()
    found = registered(names)
    if not found:
        raise DeployError("no stemforge deployments on the server: register one with `stemforge deploy` first")
    deployments = [runner_deployment(d, flow_name) for flow_name, d in found]
    asyncio.run(_serve(deployments, limit, on_start))


async def _serve(deployments: list["RunnerDeployment"], limit: int | None,
                 on_start: Callable[[list[str]], None] | None) -> None:
    """Run a Prefect runner until a signal, then stop it on its own loop.

    Why not `prefect.serve`: in Prefect 3.8.8 its SIGTERM handler exits without awaiting `Runner.astop` and Ctrl-C
    cancels the loop, so a flow run in progress is killed but stays Running on the server forever. `astop` instead
    cancels in-progress runs properly (state Cancelled, process stopped) before the runner exits."""
    from prefect.runner import Runner

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:  # Runner.start installs this for SIGTERM
            loop.call_soon_threadsafe(stop.set)

    runner = _Runner(pause_on_shutdown=False, limit=limit)
    for deployment in deployments:
        await runner.aadd_deployment(deployment)
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM until Runner.start replaces it with handle_sigterm
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(runner.start())
    stopping = asyncio.create_task(stop.wait())
    if on_start:
        on_start([d.full_name for d in deployments])
    done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if serving not in done:
        if runner.started:
            await runner.astop()
        else:  # a signal while the runner was still starting
            serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


@dataclass(frozen=True)
class RunRow:
    id: str
    name: str
    flow: str
    deployment: str | None
    run_name: str | None
    state: str
    start_time: str | None
    duration_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def recent_runs(limit: int = 20, flow_key: str | None = None) -> list[RunRow]:
    """The latest top-level runs of the stemforge flows (or of one) that are due, newest first. Left out: runs
    scheduled for the future (a cron deployment keeps dozens queued) and sub-flow runs (the build inside a run)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowFilter, FlowFilterName,
                                                FlowRunFilter, FlowRunFilterExpectedStartTime,
                                                FlowRunFilterParentTaskRunId)
    from prefect.client.schemas.sorting import FlowRunSort

    by_key = flows()
    if flow_key is not None and flow_key not in by_key:
        raise DeployError(f"unknown flow {flow_key!r} (one of {', '.join(by_key)})")
    key_of = {f.name: k for k, f in by_key.items()}
    names = [by_key[flow_key].name] if flow_key else list(key_of)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=names)),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(timezone.utc)),
                parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True)),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
        flow_of = _flow_names(client, {r.flow_id for r in runs})
        deployment_ids = sorted({r.deployment_id for r in runs if r.deployment_id}, key=str)
        deployment_of = {d.id: d.name for d in client.read_deployments(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)))} if deployment_ids else {}
    return [RunRow(id=str(r.id), name=r.name, flow=key_of.get(flow_of[r.flow_id], flow_of[r.flow_id]),
                   deployment=deployment_of.get(r.deployment_id) if r.deployment_id else None,
                   run_name=_run_name(r.parameters), state=r.state.name if r.state else "?",
                   start_time=r.start_time.isoformat() if r.start_time else None,
                   duration_s=_duration_s(r)) for r in runs]


def _flow(flow_key: str) -> "Flow[..., Any]":
    by_key = flows()
    if flow_key not in by_key:
        raise DeployError(f"unknown flow {flow_key!r} (one of {', '.join(by_key)})")
    return by_key[flow_key]


def _flow_names(client: Any, flow_ids: set[Any]) -> dict[Any, str]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId

    if not flow_ids:
        return {}
    return {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=list(flow_ids))))}


def _run_name(parameters: dict[str, Any]) -> str | None:
    """The stemforge run (runs/<name>/) a flow run works on: its `name` parameter, else its config's run.name."""
    if parameters.get("name"):
        return str(parameters["name"])
    config = parameters.get("config")
    run = config.get("run") if isinstance(config, dict) else None
    return str(run["name"]) if isinstance(run, dict) and run.get("name") else None


def _duration_s(run: Any) -> float | None:
    if run.start_time and run.end_time:
        return round((run.end_time - run.start_time).total_seconds(), 1)
    if run.start_time:  # still running
        return round(run.estimated_run_time.total_seconds(), 1)
    return None
