"""Recipe protocol and placement helpers shared by the recipes."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.mixing.config import MixingConfig
from pipelines.mixing.distributions import parse_dist
from pipelines.mixing.pool import SourceEntry, SourcePool, UsageLedger
from pipelines.mixing.spec import Component, Group


@dataclass
class Draft:
    """A tuple before query sampling: placed components (with roles), sub-mixture groups, operator, audit info."""

    components: list[Component]
    operator: str = "extract"
    groups: list[Group] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Recipe:
    """One *unit* (a draw of sources) yields one or more drafts; the planner numbers drafts consecutively."""

    wild: SourcePool | None = None  # in-the-wild scene pool, set by make_recipe

    def __init__(self, name: str, cfg: MixingConfig, pool: SourcePool):
        self.name = name
        self.cfg = cfg
        self.pool = pool
        self.ref_level = parse_dist(cfg.loudness.ref_level_db, "loudness.ref_level_db")
        self.check_pool()

    @property
    def recipe_id(self) -> int:
        """Stable numeric id mixed into every RNG seed, so recipes with the same seed draw independently."""
        return zlib.crc32(self.name.encode("utf-8"))

    def check_pool(self) -> None:
        """Raise PoolError early when the pool can never satisfy this recipe."""

    def plan_unit(self, rng: np.random.Generator, ledger: UsageLedger) -> list[Draft]:  # pragma: no cover - abstract
        raise NotImplementedError


def component(entry: SourceEntry, role: str, start: float, onset: float, duration: float, level_db: float | None = None,
              gain_db: float = 0.0, group: int | None = None) -> Component:
    return Component(entry.clip_id, entry.path, list(entry.labels), role, round(start, 6), round(onset, 6),
                     round(duration, 6), None if level_db is None else float(level_db), float(gain_db), group)


def start_range(entry: SourceEntry, length: float) -> tuple[float, float]:
    """Where an excerpt of `length` seconds may start in the clip: inside its active span when the manifest records
    one (the whole span inside the excerpt when the span is shorter), anywhere in the clip otherwise.

    Why: an ESC-50 clip is a short event padded with digital silence; excerpts cut at random from the whole clip
    were often silent and their tuples dropped."""
    latest = max(0.0, entry.duration_s - length)
    if entry.active is None:
        return 0.0, latest
    a, b = entry.active
    if b - a >= length:
        return min(a, latest), min(b - length, latest)
    return max(0.0, min(b - length, latest)), min(a, latest)


def place_full(entry: SourceEntry, rng: np.random.Generator, duration_s: float) -> tuple[float, float, float]:
    """(source_start, onset, length): a random window of the clip covering the mixture (within its active span), or
    the whole clip at a random onset."""
    if entry.duration_s >= duration_s:
        return float(rng.uniform(*start_range(entry, duration_s))), 0.0, duration_s
    return 0.0, float(rng.uniform(0.0, duration_s - entry.duration_s)), entry.duration_s


def place_event(entry: SourceEntry, rng: np.random.Generator, duration_s: float, event_s: float) -> tuple[float, float, float]:
    """An event of `event_s` seconds (clipped to clip and mixture) cut from a random point of the clip's active
    span, at a random onset."""
    length = max(0.0, min(event_s, entry.duration_s, duration_s))
    start = float(rng.uniform(*start_range(entry, length)))
    onset = float(rng.uniform(0.0, duration_s - length))
    return start, onset, length
