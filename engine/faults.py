"""Fault injection for tests and chaos drills: `STEMFORGE_FAULTS` makes named steps fail on purpose.

Why in the engine: the fault tests must exercise the real retry and resume paths of a real run (real Prefect,
real Ray), not a mock; an injected fault is raised (or the process killed) exactly where a real one would hit,
at the start of the step's work, after its inputs are known and before its marker is written.

Format: comma-separated `step:kind[:times]`, e.g. `synthetic:oserror:1,separator_1:kill:1`. Kinds:
`oserror` (transient: an I/O error, retried), `config` (permanent: a RunError, not retried), `kill` (SIGKILL of
this process: a crash midway). `times` (default 1) counts across retries and re-runs of the same run directory
(a counter under `<run>/faults/`), so "fail once" fails once even when the process is restarted.
"""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

ENV = "STEMFORGE_FAULTS"
KINDS = ("oserror", "config", "kill")


def planned(step: str) -> tuple[str, int] | None:
    """(kind, times) planned for `step`, or None."""
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        parts = item.split(":")
        if parts[0] != step:
            continue
        kind = parts[1] if len(parts) > 1 else "oserror"
        if kind not in KINDS:
            raise ValueError(f"{ENV}: {item!r}: kind must be one of {', '.join(KINDS)}")
        return kind, int(parts[2]) if len(parts) > 2 else 1
    return None


def maybe_fail(step: str, root: str | Path) -> None:
    """Raise (or die) if a fault is planned for `step` and has fired fewer than its `times` in this run."""
    plan = planned(step)
    if plan is None:
        return
    kind, times = plan
    counter = Path(root) / "faults" / f"{step}.{kind}"
    counter.parent.mkdir(parents=True, exist_ok=True)
    fired = int(counter.read_text()) if counter.is_file() else 0
    if fired >= times:
        return
    counter.write_text(str(fired + 1))  # before failing: a killed process must not fire again forever
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "config":
        from engine.workspace import RunError

        raise RunError(f"{root}: injected configuration error in step {step} ({ENV})")
    raise OSError(errno.EIO, f"injected I/O error in step {step} ({ENV})", str(counter))
