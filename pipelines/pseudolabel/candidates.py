"""Test-time candidate variants per query and their reranking (SAM Audio §6.1: 1 x judge + 5 x CLAP).

A variant changes how a query is asked, not what is asked: positive-only vs positive+negative query, and the input
gain (the mixture is scaled by g before separation and the estimate by 1/g after, which probes the separator's
level sensitivity). Variants are deterministic (no sampling), so a re-run reproduces the same candidates.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pipelines.pseudolabel.config import PseudoLabelConfig
from pipelines.pseudolabel.decompose import Query
from pipelines.pseudolabel.windows import windowed

SeparateFn = Callable[[np.ndarray, int, list[str], list[str | None]], np.ndarray]


@dataclass(frozen=True)
class Variant:
    query_mode: str  # "posneg" | "pos"
    gain_db: float

    @property
    def gain(self) -> float:
        return float(10.0 ** (self.gain_db / 20.0))


def variants(cfg: PseudoLabelConfig) -> list[Variant]:
    """The first `num_candidates` of query_modes x gains_db, in config order (the default variant first)."""
    allv = [Variant(m, float(g)) for m, g in itertools.product(cfg.query_modes, cfg.gains_db)]
    if cfg.num_candidates > len(allv):
        raise ValueError(f"pseudo_label.num_candidates={cfg.num_candidates} but only {len(allv)} variants are configured "
                         f"(query_modes x gains_db)")
    return allv[: cfg.num_candidates]


def query_texts(query: Query, variant: Variant) -> tuple[str, str | None]:
    negative = query.negative_text if variant.query_mode == "posneg" else None
    return query.positive_text, negative


def separate_variant(separate: SeparateFn, scene: np.ndarray, sample_rate: int, pos: Sequence[str],
                     neg: Sequence[str | None], gain: float, window_s: float, overlap_s: float) -> np.ndarray:
    """Estimates `[N, T]` of one scene for N query texts in one batch: the scene scaled by the variant's linear
    `gain`, windowed if long, the estimates scaled back. The one place a candidate track is made (the review page
    re-makes dropped candidates' tracks with it)."""
    scene = np.asarray(scene, dtype=np.float32)
    mix = np.repeat((scene * gain)[None, :], len(pos), axis=0)
    est = windowed(lambda chunk: separate(chunk, sample_rate, list(pos), list(neg)), mix, sample_rate, window_s, overlap_s)
    return est / gain


def separate_queries(separate: SeparateFn, scene: np.ndarray, sample_rate: int, queries: Sequence[Query],
                     variant_list: Sequence[Variant], window_s: float, overlap_s: float) -> np.ndarray:
    """Estimates `[Q, V, T]` for every query x variant of one scene, batched per variant, windowed if long."""
    scene = np.asarray(scene, dtype=np.float32)
    out = np.zeros((len(queries), len(variant_list), len(scene)), dtype=np.float32)
    for v, variant in enumerate(variant_list):
        texts = [query_texts(q, variant) for q in queries]
        out[:, v, :] = separate_variant(separate, scene, sample_rate, [t[0] for t in texts], [t[1] for t in texts],
                                        variant.gain, window_s, overlap_s)
    return out


def rerank_score(judge_overall: np.ndarray, clap: np.ndarray, judge_weight: float, clap_weight: float) -> np.ndarray:
    """`judge_weight x judge + clap_weight x clap`; a NaN in either makes the candidate lose."""
    score = judge_weight * np.asarray(judge_overall, dtype=np.float64) + clap_weight * np.asarray(clap, dtype=np.float64)
    return np.where(np.isfinite(score), score, -np.inf)


def best_variant(scores: np.ndarray) -> np.ndarray:
    """Index of the best variant per query for `[Q, V]` scores; ties go to the earlier (default) variant."""
    return np.argmax(np.asarray(scores, dtype=np.float64), axis=1)
