"""Fault injection for tests and chaos drills: `STEMFORGE_FAULTS` makes named steps, or named file-system points,
fail on purpose.

Why in the engine: the fault tests must exercise the real retry and resume paths of a real run (real Prefect,
real Ray), not a mock; an injected fault is raised (or the process killed) exactly where a real one would hit.

Format: comma-separated `point:kind[:times]`, e.g. `synthetic:oserror:1,separator_1:kill:1`. Kinds: `oserror`
(transient: an I/O error, retried), `config` (permanent: a RunError, not retried), `kill` (SIGKILL of this
process: a crash midway). `times` (default 1) counts across retries and re-runs of the same run directory (a
counter under `<run>/faults/`), so "fail once" fails once even when the process is restarted.

Points:
- a step name (`separator_1`): at the start of the step's work, after its inputs are known and before its marker
  is written (engine/steps.py calls `maybe_fail`).
- `EVENT@GLOB`, a file-system point, with GLOB an `fnmatch` pattern of an absolute path (no `:` or `,`):
  `rename@GLOB` fires just before a file is renamed onto a final name matching GLOB (its content complete and
  fsynced under the temporary name, the final name not there yet: a shard's tar or index part, a checkpoint, a
  step marker); `renamed@GLOB` just after that rename (at the next audited call of the same thread: the final name
  is published and nothing after it has happened: a tar before its index part, a step's marker before Prefect
  records the task run as Completed); `open@GLOB` when a file matching GLOB is about to be opened for writing.
  These need no hook in the code that writes: a `sys.addaudithook` hook, installed when this module is imported
  and `STEMFORGE_FAULTS` names such a point (nothing is installed otherwise), watches the interpreter's
  `os.rename` (also raised by `os.replace`) and `open` audit events, so storage/ and models/ stay free of engine
  imports. The counter lives under the run directory that holds the path (the nearest parent with `run.json`), or
  under the last run this process saw in `maybe_fail` for a path outside every run.
"""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import signal
import sys
import threading
from pathlib import Path

ENV = "STEMFORGE_FAULTS"
KINDS = ("oserror", "config", "kill")
EVENTS = ("rename", "renamed", "open")
RUN_FILE = "run.json"  # engine/workspace.py writes it at the top of every run directory

_last_root: Path | None = None  # the run this process last checked a step fault for (file points outside a run)


def _items() -> list[tuple[str, str, int]]:
    """(point, kind, times) of every planned fault."""
    out = []
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        parts = item.split(":")
        kind = parts[1] if len(parts) > 1 else "oserror"
        if kind not in KINDS:
            raise ValueError(f"{ENV}: {item!r}: kind must be one of {', '.join(KINDS)}")
        if "@" in parts[0] and parts[0].split("@", 1)[0] not in EVENTS:
            raise ValueError(f"{ENV}: {item!r}: a file-system point is EVENT@GLOB, EVENT one of {', '.join(EVENTS)}")
        out.append((parts[0], kind, int(parts[2]) if len(parts) > 2 else 1))
    return out


def planned(step: str) -> tuple[str, int] | None:
    """(kind, times) planned for `step`, or None."""
    for point, kind, times in _items():
        if point == step:
            return kind, times
    return None


def counter_path(root: str | Path, point: str, kind: str) -> Path:
    """Where the run in `root` counts the fires of `point:kind` (a file-system point by the hash of its glob)."""
    name = point if "@" not in point else f"{point.split('@', 1)[0]}-{hashlib.sha256(point.encode()).hexdigest()[:12]}"
    return Path(root) / "faults" / f"{name}.{kind}"


def _fire(point: str, kind: str, times: int, root: Path) -> None:
    """Count and fire one planned fault at `point` of the run in `root`, unless it fired `times` already."""
    counter = counter_path(root, point, kind)
    counter.parent.mkdir(parents=True, exist_ok=True)
    fired = int(counter.read_text()) if counter.is_file() else 0
    if fired >= times:
        return
    counter.write_text(str(fired + 1))  # before failing: a killed process must not fire again forever
    where = point if "@" in point else f"step {point}"
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "config":
        from engine.workspace import RunError

        raise RunError(f"{root}: injected configuration error in {where} ({ENV})")
    raise OSError(errno.EIO, f"injected I/O error in {where} ({ENV})", str(counter))


def maybe_fail(step: str, root: str | Path) -> None:
    """Raise (or die) if a fault is planned for `step` and has fired fewer than its `times` in this run."""
    global _last_root
    _last_root = Path(root)
    plan = planned(step)
    if plan is not None:
        _fire(step, plan[0], plan[1], Path(root))


# ---- file-system points ------------------------------------------------------------------------------------------

_local = threading.local()  # .busy: inside the hook (its own counter writes are audited too); .after: a `renamed` due


def _run_root(path: str) -> Path | None:
    for parent in Path(path).parents:
        if (parent / RUN_FILE).is_file():
            return parent
    return _last_root


def _path_of(arg: object) -> str | None:
    if isinstance(arg, int):
        return None  # an open file descriptor: no name to match
    try:
        path = os.fsdecode(arg)  # type: ignore[arg-type]
    except TypeError:
        return None
    return os.path.abspath(path)


def _written(args: tuple) -> bool:
    mode, flags = args[1], args[2]
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def _hook(points: list[tuple[str, str, str, int]]) -> "object":
    def audit(event: str, args: tuple) -> None:
        if event not in ("os.rename", "open") and getattr(_local, "after", None) is None:
            return
        if getattr(_local, "busy", False):
            return
        _local.busy = True
        try:
            due = getattr(_local, "after", None)
            if due is not None:  # the matched rename has returned: this is the thread's next audited call
                _local.after = None
                _fire(*due)
            if event == "os.rename":
                want, path = ("rename", "renamed"), _path_of(args[1])
            elif event == "open" and _written(args):
                want, path = ("open",), _path_of(args[0])
            else:
                return
            if path is None:
                return
            for point, ev, glob, kind, times in points:
                if ev in want and fnmatch.fnmatchcase(path, glob):
                    root = _run_root(path)
                    if root is None:
                        continue
                    if ev == "renamed":
                        _local.after = (point, kind, times, root)
                    else:
                        _fire(point, kind, times, root)
        finally:
            _local.busy = False

    return audit


def install() -> bool:
    """Install the audit hook if `STEMFORGE_FAULTS` names a file-system point; True when installed. Idempotent."""
    if getattr(install, "done", False):
        return True
    points = [(p, *p.split("@", 1), kind, times) for p, kind, times in _items() if "@" in p]
    if not points:
        return False
    sys.addaudithook(_hook(points))  # type: ignore[arg-type]
    install.done = True  # type: ignore[attr-defined]
    return True


install()
