"""Train the mini scorers in a second process while the bootstrap separator trains in this one.

Why: on the 2-core reference machine both trainers are single-threaded (one torch thread measured fastest), so
running them side by side uses the second core instead of leaving it idle; the scorers need only the corpus, not
the separator. The child writes the same step markers the sequential path would, so the parent afterwards just
resumes them and a crash in either process resumes cleanly on the next `stemforge run`.
"""
from __future__ import annotations

import logging
import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor
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


class ScorerProcess:
    """Handle on the background scorer training; `wait()` re-raises the child's error in the parent."""

    def __init__(self, cfg: Any, root: Path, config_hash: str, sources: str) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        level = logging.getLogger("stemforge").getEffectiveLevel()
        self._future: Future = self._pool.submit(_child, cfg, str(root), config_hash, sources, level)

    def wait(self) -> dict[str, float]:
        try:
            return self._future.result()
        finally:
            self._pool.shutdown(wait=True)

    def cancel(self) -> None:
        """Stop the child when the parent fails; its finished steps keep their markers for the next run."""
        for proc in list(getattr(self._pool, "_processes", {}).values()):
            proc.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
