"""Distribution tuples: how config describes a random quantity (Scaper-style).

Why tuples instead of bare ranges: one config field can say "always 4 s", "one of these", "uniform in [-3, 10]"
or "normal around 0, clipped to +/-15" without a new field per case, and the tuple is plain YAML/JSON so it is
recorded verbatim in the resolved config and hashed into lineage.

Accepted forms (all JSON/YAML lists):
  5.0                          -> const 5.0
  [lo, hi]                     -> uniform in [lo, hi]        (shorthand, so `--set mixing.x=[-3,10]` works)
  ["const", v]
  ["choose", [a, b, ...]]      -> uniformly one of the values
  ["uniform", lo, hi]
  ["randint", lo, hi]          -> integer in [lo, hi] inclusive
  ["normal", mean, std]
  ["truncnorm", mean, std, lo, hi]  -> normal, redrawn until inside [lo, hi] (bounded tries, then clipped)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

KINDS = ("const", "choose", "uniform", "randint", "normal", "truncnorm")
DistSpec = Any  # what a config field holds before parsing: number, list or tagged list


class DistributionError(ValueError):
    """A malformed distribution tuple; the message names the offending value."""


@dataclass(frozen=True)
class Dist:
    kind: str
    args: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw one value; consumes the generator the same way every time for the same kind (determinism)."""
        k, a = self.kind, self.args
        if k == "const":
            return a[0]
        if k == "choose":
            values = a[0]
            return values[int(rng.integers(len(values)))]
        if k == "uniform":
            return float(rng.uniform(a[0], a[1]))
        if k == "randint":
            return int(rng.integers(a[0], a[1] + 1))
        if k == "normal":
            return float(rng.normal(a[0], a[1]))
        if k == "truncnorm":
            mean, std, lo, hi = a
            for _ in range(64):
                value = float(rng.normal(mean, std))
                if lo <= value <= hi:
                    return value
            return float(np.clip(mean, lo, hi))
        raise DistributionError(f"unknown distribution kind {k!r}")  # unreachable after parse

    @property
    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value the distribution can produce (inf for an unbounded normal)."""
        k, a = self.kind, self.args
        if k == "const":
            return (float(a[0]), float(a[0]))
        if k == "choose":
            return (float(min(a[0])), float(max(a[0])))
        if k in ("uniform", "randint"):
            return (float(a[0]), float(a[1]))
        if k == "normal":
            return (-np.inf, np.inf)
        return (float(a[2]), float(a[3]))

    def to_json(self) -> list[Any]:
        return [self.kind, *self.args]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DistributionError(f"{what}: expected a number, got {value!r}")
    if not np.isfinite(value):
        raise DistributionError(f"{what}: must be finite, got {value!r}")
    return value


def parse_dist(spec: DistSpec, name: str = "distribution") -> Dist:
    """Validate a distribution tuple and return a `Dist`; errors name the field and the bad value."""
    if isinstance(spec, Dist):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Dist("const", (_number(spec, name),))
    if not isinstance(spec, (list, tuple)) or not spec:
        raise DistributionError(f"{name}: expected a number or a list like ['uniform', lo, hi], got {spec!r}")
    head = spec[0]
    if not isinstance(head, str):
        if len(spec) != 2:
            raise DistributionError(f"{name}: a bare list must be [lo, hi] (uniform), got {spec!r}")
        return parse_dist(["uniform", *spec], name)
    kind, args = head, tuple(spec[1:])
    arity = {"const": 1, "choose": 1, "uniform": 2, "randint": 2, "normal": 2, "truncnorm": 4}
    if kind not in arity:
        raise DistributionError(f"{name}: unknown distribution kind {kind!r}; allowed: {list(KINDS)}")
    if len(args) != arity[kind]:
        raise DistributionError(f"{name}: {kind} takes {arity[kind]} argument(s), got {len(args)} in {spec!r}")
    if kind == "const":
        return Dist(kind, args)
    if kind == "choose":
        values = args[0]
        if not isinstance(values, (list, tuple)) or not values:
            raise DistributionError(f"{name}: choose needs a non-empty list, got {values!r}")
        return Dist(kind, (list(values),))
    nums = tuple(_number(v, f"{name} ({kind})") for v in args)
    if kind in ("uniform", "randint") and nums[0] > nums[1]:
        raise DistributionError(f"{name}: {kind} lower bound {nums[0]} is above upper bound {nums[1]}")
    if kind == "randint" and any(int(v) != v for v in nums):
        raise DistributionError(f"{name}: randint bounds must be integers, got {nums}")
    if kind == "randint":
        nums = tuple(int(v) for v in nums)
    if kind in ("normal", "truncnorm") and nums[1] < 0:
        raise DistributionError(f"{name}: standard deviation must be >= 0, got {nums[1]}")
    if kind == "truncnorm" and nums[2] > nums[3]:
        raise DistributionError(f"{name}: truncnorm bounds {nums[2]} > {nums[3]}")
    return Dist(kind, nums)


def check_dist(spec: DistSpec, name: str, lo: float | None = None, hi: float | None = None) -> DistSpec:
    """Pydantic helper: parse to validate (and bound-check), keep the plain form so config round-trips as YAML."""
    dist = parse_dist(spec, name)
    b_lo, b_hi = dist.bounds
    if lo is not None and b_lo < lo:
        raise DistributionError(f"{name}: values can go down to {b_lo}, below the allowed minimum {lo}")
    if hi is not None and b_hi > hi:
        raise DistributionError(f"{name}: values can go up to {b_hi}, above the allowed maximum {hi}")
    return spec


def sample_many(dists: Sequence[Dist], rng: np.random.Generator) -> list[Any]:
    return [d.sample(rng) for d in dists]
