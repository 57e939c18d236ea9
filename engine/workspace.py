"""A run's directory and its steps: `runs/<name>/`, one done-marker per finished step.

Why markers: `stemforge run` is long and must resume where it stopped. Each step writes its outputs under its
own folder (resuming inside itself where it can: shard stores, trainers, executor batches) and, only when it has
fully finished, `steps/<step>.json` with its outputs and timing. A re-run skips steps whose marker exists; a step
that was killed midway is simply run again. The config hash is recorded so a run directory is never silently
continued with a different configuration.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from storage.atomic import atomic_write_text

log = logging.getLogger("stemforge.run")


def _remove_stale_temps(root: Path) -> None:
    """Remove the temp files (`.<name>.<random>.tmp`: storage/atomic.py, the shard writer) a killed invocation left.

    Why here: every writer makes a fresh temp name, so nothing ever renames or reuses a dead one; shard stores
    clean their own groups' temps, but a checkpoint, marker, table or report killed between its write and its
    rename would stay forever. The run's opener is the one place that knows no writer of this run is alive."""
    stale = [p for p in root.rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", root, len(stale))


class RunError(RuntimeError):
    """A run that cannot start or continue; the message names the run directory and the problem."""


@dataclass
class Workspace:
    root: Path
    config_hash: str
    # steps whose work ran in this invocation; every other finished step was resumed (from its marker, or from a
    # cache that agrees with it: flows/tasks.py), which is why timings and resumed steps are read from the markers
    ran_steps: list[str] = field(default_factory=list)
    # made when the directory is created: a cache key that includes it dies with the directory (`--restart`)
    run_id: str = ""

    @classmethod
    def open(cls, root: str | Path, config_hash: str, restart: bool = False, allow_config_change: bool = False) -> "Workspace":
        root = Path(root)
        if restart and root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        stamp = root / "run.json"
        if stamp.is_file():
            prev = json.loads(stamp.read_text())
            if prev.get("config_hash") != config_hash and not allow_config_change:
                raise RunError(f"{root}: was started with config {prev.get('config_hash')}, now {config_hash}; "
                               "use --restart to start over or --name for a new run")
            run_id = prev.get("run_id") or uuid.uuid4().hex
            _remove_stale_temps(root)
        else:
            run_id = uuid.uuid4().hex
        atomic_write_text(stamp, json.dumps({"config_hash": config_hash, "run_id": run_id}, indent=2))
        (root / "steps").mkdir(exist_ok=True)
        return cls(root=root, config_hash=config_hash, run_id=run_id)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def marker(self, step: str) -> Path:
        return self.root / "steps" / f"{step}.json"

    def done(self, step: str) -> dict[str, Any] | None:
        m = self.marker(step)
        return json.loads(m.read_text()) if m.is_file() else None

    def markers(self) -> list[dict[str, Any]]:
        """Every finished step's marker, in the order the steps finished."""
        paths = sorted((self.root / "steps").glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [json.loads(p.read_text()) for p in paths]

    @property
    def timings(self) -> dict[str, float]:
        """Wall seconds of every finished step (as it ran, whenever that was)."""
        return {m["step"]: float(m.get("seconds", 0.0)) for m in self.markers()}

    @property
    def cpu_timings(self) -> dict[str, float]:
        """Process CPU seconds of every finished step: on a shared machine wall time lies."""
        return {m["step"]: float(m.get("cpu_seconds", 0.0)) for m in self.markers()}

    @property
    def resumed_steps(self) -> list[str]:
        """Finished steps whose work did not run in this invocation."""
        return [m["step"] for m in self.markers() if m["step"] not in self.ran_steps]

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run `fn` unless `name` already finished; returns its outputs (from the marker when resumed)."""
        prev = self.done(name)
        if prev is not None:
            log.info("step %s: done (resumed)", name)
            return prev["outputs"]
        log.info("step %s: running", name)
        t0, c0 = time.perf_counter(), time.process_time()
        outputs = fn()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.ran_steps.append(name)
        atomic_write_text(self.marker(name), json.dumps({"step": name, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                                                         "outputs": outputs}, indent=2, default=str))
        log.info("step %s: finished in %.1f s (%.1f CPU s)", name, seconds, cpu)
        return outputs
