"""The mini scorers (CLAP, judge, PC) train as Ray tasks beside the bootstrap separator.

Why: the scorers need only the corpus, not the separator, and each trainer is single-threaded, so they use the
cores the separator leaves free. Ray places them (one CPU each) wherever the cluster has room; tasks beyond the
free cores are chained instead of oversubscribing the machine: a chained task is scheduled only once its
predecessor has finished (Ray resolves the argument), so no task sits on a worker waiting, and a failing step
stops the rest of its chain as the sequential path does. Each task writes the same step marker the sequential
path writes (engine/workspace.py), so the driver afterwards just resumes the markers and a crash anywhere resumes
cleanly on the next `stemforge run`; a retried task (lost worker) finds a finished marker and returns at once.
The run directory must be visible to every node (one machine, or a shared filesystem). The tasks ask for no GPU
(the mini scorers are small; Ray then hides the GPUs from them, so `device: auto` resolves to CPU).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("stemforge.run")

SCORER_STEPS = ("scorer_clap", "scorer_judge", "scorer_pc")


def _train_one(step: str, cfg: Any, root: str, config_hash: str, sources: str, log_level: int,
               after: dict[str, Any] | None = None) -> dict[str, Any]:
    """Task body: run one scorer step into the run directory's markers; returns where and how long it ran.

    `after` is the previous task of this chain (passed as a ref, so Ray starts this task only once it is done);
    its value is not needed."""
    import os
    import socket

    from engine.determinism import seed_step
    from engine.model_steps import train_clap_step, train_judge_step, train_pc_step
    from engine.workspace import Workspace

    root_logger = logging.getLogger()  # a Ray worker process is reused across tasks: one handler, renamed per step
    handler = next((h for h in root_logger.handlers if getattr(h, "_stemforge_task", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._stemforge_task = True  # type: ignore[attr-defined]
        root_logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s[{step}]: %(message)s", "%H:%M:%S"))
    logging.getLogger("stemforge").setLevel(log_level)
    fns = {"scorer_clap": train_clap_step, "scorer_judge": train_judge_step, "scorer_pc": train_pc_step}
    ws = Workspace(root=Path(root), config_hash=config_hash)
    if ws.done(step) is None:
        seed_step(cfg.run.seed, step, cfg.separator.threads)  # the state the driver gives the same step
    ws.step(step, lambda: fns[step](ws, cfg, sources))
    return {"step": step, "seconds": ws.timings[step], "pid": os.getpid(), "host": socket.gethostname(),
            "resumed": step in ws.resumed_steps}


class ScorerTasks:
    """Handle on the scorer tasks of one run: `wait()` re-raises the first failing step's own error, `cancel()`
    stops the rest when the driver fails (finished steps keep their markers)."""

    def __init__(self, cfg: Any, root: Path, config_hash: str, sources: str, steps: list[str], reserved_cpus: float = 1.0) -> None:
        import ray

        free = max(1, int(ray.cluster_resources().get("CPU", 1.0) - reserved_cpus))
        chains = max(1, min(len(steps), free))
        remote = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(_train_one)
        level = logging.getLogger("stemforge").getEffectiveLevel()
        self.steps = list(steps)
        self.refs: list[Any] = []
        last: list[Any | None] = [None] * chains
        for i, step in enumerate(self.steps):
            prev = last[i % chains]
            ref = remote.options(name=f"stemforge-{step}").remote(step, cfg, str(root), config_hash, sources, level,
                                                                   prev)
            last[i % chains] = ref
            self.refs.append(ref)
        log.info("scorers: %s as Ray tasks in %d chain(s) beside separator_0", ", ".join(self.steps), chains)

    def wait(self) -> dict[str, dict[str, Any]]:
        """{step: {seconds, pid, host, resumed}}; the first failing step (in order) raises its own exception."""
        import ray

        ray.wait(self.refs, num_returns=len(self.refs))  # every chain ends before the first error is reported
        done: dict[str, dict[str, Any]] = {}
        for step, ref in zip(self.steps, self.refs):
            try:
                done[step] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if hasattr(cause, "add_note"):
                    cause.add_note(f"in the Ray task of step {step}")
                raise cause from None
        return done

    def cancel(self) -> None:
        import ray

        for ref in self.refs:
            try:
                ray.cancel(ref, force=True)
            except Exception as exc:  # noqa: BLE001 - an already finished task cannot be cancelled
                log.debug("cancel %s: %s", ref, exc)
