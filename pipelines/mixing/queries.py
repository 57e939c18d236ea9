"""ClearSep query sampling and silence augmentation, applied to every tuple whatever its recipe.

Positive labels are the target's classes, negative labels the residual's. The query mode decides which sides the
separator sees: pos-only 0.25, neg-only 0.25, pos+neg 0.5 (ClearSep Sec. 3.2). With probability alpha = 0.05 the
tuple becomes a *silence* tuple (ClearSep Sec. 3.3.1): the positive query is a class absent from the mixture, the
target is all-zero and the residual is the whole mixture, which teaches the model to output silence for absent
queries instead of the most similar sound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipelines.mixing.config import QueryConfig
from pipelines.mixing.prompts import make_prompt


@dataclass
class QueryChoice:
    query_mode: str
    positive_labels: list[str]
    negative_labels: list[str]
    silent_target: bool
    operator: str
    prompt: str


def sample_mode(rng: np.random.Generator, cfg: QueryConfig, allow_neg: bool = True) -> str:
    probs = np.array([cfg.pos_only, cfg.neg_only if allow_neg else 0.0, cfg.pos_neg], dtype=np.float64)
    probs = probs / probs.sum()
    return ("pos", "neg", "posneg")[int(rng.choice(3, p=probs))]


def choose_queries(rng: np.random.Generator, cfg: QueryConfig, operator: str, target_labels: Sequence[str],
                   residual_labels: Sequence[str], vocabulary: Sequence[str]) -> QueryChoice:
    """Decide silence augmentation, query mode and prompt text for one tuple (consumes `rng` in a fixed order)."""
    present = set(target_labels) | set(residual_labels)
    absent = [c for c in vocabulary if c not in present]
    silence_draw = float(rng.random())
    if absent and silence_draw < cfg.silence_alpha:
        label = absent[int(rng.integers(len(absent)))]
        mode = sample_mode(rng, cfg, allow_neg=False)
        negatives = list(dict.fromkeys([*target_labels, *residual_labels]))
        return QueryChoice(mode, [label], negatives, True, "extract", make_prompt("extract", [label], rng))
    mode = sample_mode(rng, cfg, allow_neg=bool(residual_labels))
    named = list(target_labels) if operator == "extract" else list(residual_labels)
    return QueryChoice(mode, list(target_labels), list(residual_labels), False, operator, make_prompt(operator, named, rng))
