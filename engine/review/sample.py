"""Which candidates get players: per filter, a few kept and a few dropped ones near its threshold.

Why near the threshold: a curator tunes a threshold by ear, and the candidates just either side of it are the ones
a small change would flip. Far-away candidates say little (clearly good, clearly broken). The choice is
deterministic: the `2 * per_side` candidates closest to the threshold on each side form a band, and a generator
seeded by (seed, iteration, filter) picks `per_side` of them, so the same run and seed always give the same page
while a different seed shows different neighbours. Pass/fail is recomputed from the score and the rule's operator
(as `Rule.apply` does), so a switched-off filter still shows what its threshold *would* keep and drop.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class RuleSpec:
    """A filter rule as the page shows it (the fields of `pipelines.filters.rules.Rule`)."""

    name: str
    column: str
    op: str
    threshold: float
    reason: str
    enabled: bool

    def passes(self, values: np.ndarray) -> np.ndarray:
        """Rule.apply's verdict: a missing score (NaN) never passes."""
        values = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return OPS[self.op](values, self.threshold) & np.isfinite(values)


@dataclass(frozen=True)
class Pick:
    """One sampled candidate: the row index in the table, the filter and side it was sampled for."""

    row: int
    rule: str
    side: str  # "kept" | "dropped"
    distance: float  # |score - threshold|, in the score's units


def sample_near_threshold(table: Mapping[str, Any], rules: Sequence[RuleSpec], per_side: int, seed: int,
                          iteration: int = 0) -> list[Pick]:
    """Up to `per_side` kept and `per_side` dropped rows per rule, closest to its threshold first.

    Rows without a finite score for a rule are not sampled for it (there is no threshold distance); ids tie-break
    equal distances so the band does not depend on table order."""
    if per_side < 0:
        raise ValueError(f"per_side must be >= 0, got {per_side}")
    ids = np.asarray(table.get("candidate_id", []), dtype=object)
    picks: list[Pick] = []
    for r, rule in enumerate(rules):
        if rule.column not in table or per_side == 0:
            continue
        values = np.asarray([np.nan if v is None else v for v in table[rule.column]], dtype=np.float64)
        finite = np.isfinite(values)
        passed = rule.passes(values)
        dist = np.abs(values - rule.threshold)
        rng = np.random.default_rng([seed, iteration, r])
        for side, mask in (("kept", passed & finite), ("dropped", ~passed & finite)):
            rows = np.flatnonzero(mask)
            if rows.size == 0:
                continue
            order = sorted(rows.tolist(), key=lambda i: (dist[i], str(ids[i]) if ids.size else i))
            band = order[: 2 * per_side]
            chosen = band if len(band) <= per_side else [band[i] for i in sorted(rng.choice(len(band), per_side, replace=False))]
            picks += [Pick(int(i), rule.name, side, float(dist[i])) for i in chosen]
    return picks
