"""Train the mini scorers in a second process while the bootstrap separator trains in this one.

Why: on the 2-core reference machine both trainers are single-threaded (one torch thread measured fastest), so
running them side by side uses the second core instead of leaving it idle; the scorers need only the corpus, not
the separator. The child writes the same step markers the sequential path would, so the parent afterwards just
resumes them and a crash in either process resumes cleanly on the next `stemforge run`.
"""
from __future__ import annotations

import logging
import multiprocessing
import pickle
import queue
import sys
import traceback
from pathlib import Path
from typing import Any

SCORER_STEPS = ("scorer_clap", "scorer_judge", "scorer_pc")


def _child(cfg: Any, root: str, config_hash: str, sources: str, log_level: int) -> dict[str, float]:
    import torch

    from engine.model_steps import train_clap_step, train_judge_step, train_pc_step
    from engine.workspace import Workspace

    logging.basicConfig(stream=sys.stderr, level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s[scorers]: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    ws = Workspace(root=Path(root), config_hash=config_hash)
    fns = {"scorer_clap": train_clap_step, "scorer_judge": train_judge_step, "scorer_pc": train_pc_step}
    for name in SCORER_STEPS:
        ws.step(name, lambda fn=fns[name]: fn(ws, cfg, sources))
    return dict(ws.timings)


def _child_main(results: Any, cfg: Any, root: str, config_hash: str, sources: str, log_level: int) -> None:
    """Child entry point: exactly one message, `("ok", timings)` or `("error", exception, traceback text)`."""
    try:
        results.put(("ok", _child(cfg, root, config_hash, sources, log_level)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        tb = traceback.format_exc()
        try:
            pickle.dumps(exc)
        except Exception:  # an exception that cannot cross the process boundary is sent as its text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        results.put(("error", exc, tb))


class ScorerProcess:
    """Handle on the background scorer training: `wait()` returns its step timings or re-raises the child's error
    (with the child's traceback attached as a note); `cancel()` terminates it when the parent fails."""

    def __init__(self, cfg: Any, root: Path, config_hash: str, sources: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._results = ctx.Queue()
        level = logging.getLogger("stemforge").getEffectiveLevel()
        self._proc = ctx.Process(target=_child_main, name="stemforge-scorers",
                                 args=(self._results, cfg, str(root), config_hash, sources, level))
        self._proc.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def is_alive(self) -> bool:
        return self._proc.is_alive()

    def wait(self, poll_s: float = 1.0) -> dict[str, float]:
        msg = None
        try:
            while msg is None:
                try:
                    msg = self._results.get(timeout=poll_s)
                except queue.Empty:
                    if not self._proc.is_alive():  # a last message may still be in the pipe
                        try:
                            msg = self._results.get(timeout=poll_s)
                        except queue.Empty:
                            raise RuntimeError(f"background scorer process exited with code {self._proc.exitcode} "
                                               "without a result (killed? see the log above)") from None
        finally:
            self._proc.join(timeout=60)
        if msg[0] == "ok":
            return msg[1]
        exc: BaseException = msg[1]
        exc.add_note(f"in the background scorer process:\n{msg[2]}")
        raise exc

    def cancel(self) -> None:
        """Stop the child when the parent fails; its finished steps keep their markers for the next run."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=30)
