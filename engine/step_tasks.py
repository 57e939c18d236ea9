"""One engine step as a Ray task: its own worker process, one CPU, the same step function and marker as in the
driver.

Why: several steps need only one core and nothing from the step the driver is busy with, so Ray runs them on the
core that step leaves free - the mini scorers (and the final judge, which needs only the corpus and the run's judge)
beside the bootstrap separator, a control's evaluation beside its separator's. Each task opens the run directory
in its worker and calls the step function of engine/steps.py by name, so it seeds its state as the driver would
(`RunContext.step`) and writes the same marker: the driver afterwards resumes that marker, a crash anywhere resumes
cleanly on the next `stemforge run`, and a retried task (lost worker) finds a finished marker and returns at once.
Chaining (a task that must wait for another) is the caller's: the flows pass Prefect's `wait_for`. The run
directory must be visible to every node (one machine, or a shared filesystem). The tasks ask for no GPU (these
steps are small; Ray then hides the GPUs from them, so `device: auto` resolves to CPU).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("stemforge.run")


def _run_step(step: str, fn: str, args: tuple[Any, ...], cfg: Any, root: str, config_hash: str,
              log_level: int) -> dict[str, Any]:
    """Task body: `engine.steps.<fn>(ctx, *args)` for step `step` of the run at `root`; returns where and how long
    it ran."""
    import os
    import socket

    from engine import steps
    from engine.workspace import Workspace

    root_logger = logging.getLogger()  # a Ray worker process is reused across tasks: one handler, renamed per step
    handler = next((h for h in root_logger.handlers if getattr(h, "_stemforge_task", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._stemforge_task = True  # type: ignore[attr-defined]
        root_logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s[{step}]: %(message)s", "%H:%M:%S"))
    logging.getLogger("stemforge").setLevel(log_level)
    ws = Workspace(root=Path(root), config_hash=config_hash)
    getattr(steps, fn)(steps.RunContext(cfg, Path(root), ws), *args)
    return {"step": step, "seconds": ws.timings.get(step), "pid": os.getpid(), "host": socket.gethostname(),
            "resumed": step in ws.resumed_steps}


class StepTask:
    """Handle on one step running as a Ray task: `wait()` returns {step, seconds, pid, host, resumed} or re-raises
    the step's own error."""

    def __init__(self, ctx: Any, step: str, fn: str, *args: Any, fresh_process: bool = False) -> None:
        """`fresh_process`: the worker exits after this task (Ray `max_calls=1`), so a step that holds gigabytes
        (the judge calibration's rated examples) returns them to the machine instead of to a reused worker's heap."""
        import ray

        once = {"max_calls": 1} if fresh_process else {}  # otherwise Ray's default: the worker is reused
        remote = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False, **once)(_run_step)
        level = logging.getLogger("stemforge").getEffectiveLevel()
        self.step = step
        self.ref = remote.options(name=f"stemforge-{step}").remote(step, fn, args, ctx.cfg, str(ctx.root),
                                                                   ctx.ws.config_hash, level)
        log.info("%s: running as a Ray task", step)

    def wait(self) -> dict[str, Any]:
        import ray

        try:
            return ray.get(self.ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if hasattr(cause, "add_note"):
                cause.add_note(f"in the Ray task of step {self.step}")
            raise cause from None
