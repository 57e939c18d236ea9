"""When the train-and-relabel cycle stops: a pure rule over the per-iteration validation figure.

Why a rule of its own: ClearSep fixes three iterations; we decide from the measurement. After iteration k the
cycle stops when k >= `max_iterations`, or when k >= `min_iterations` and separator k gained less than
`min_gain_db` over separator k-1 on the *validation* natural scenes (the figure `run.stop_metric` names; the test
scenes only report). A missing figure (no validation scenes) cannot justify another iteration, so it stops too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class StopDecision:
    iteration: int
    stop: bool
    reason: str
    gain_db: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(values: Sequence[float | None], *, min_gain_db: float, min_iterations: int, max_iterations: int,
           metric: str = "validation figure") -> StopDecision:
    """`values[k]` is the stop metric of separator k (k = 0 is the bootstrap); decides after the last one."""
    k = len(values) - 1
    if k < 1:
        raise ValueError("the stop rule needs the bootstrap's figure and at least one iteration's")
    cur, prev = values[k], values[k - 1]
    gain = None if cur is None or prev is None else float(cur) - float(prev)
    if gain is None:
        return StopDecision(k, True, f"iteration {k}: no {metric} to compare (no validation scenes?): stopped", None)
    gain_text = f"{metric} gain {gain:+.2f} dB (from {prev:.2f} to {cur:.2f})"
    if k >= max_iterations:
        return StopDecision(k, True, f"iteration {k}: run.max_iterations={max_iterations} reached; {gain_text}", gain)
    if k >= min_iterations and gain < min_gain_db:
        return StopDecision(k, True, f"iteration {k}: {gain_text} < run.min_gain_db={min_gain_db:g} dB", gain)
    return StopDecision(k, False, f"iteration {k}: {gain_text}; continuing", gain)
