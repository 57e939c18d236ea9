"""Scene-level filter: the remix of all tracks must reconstruct the natural scene (ClearSep §4.1, App. A.2).

Re-SDR = SDR(sum of tracks, scene) and Re-SISDR likewise, in float64 (models.metrics). A scene whose tracks add up to it within
`sst_min_db` (both metrics) is tier "sst", within `itt_min_db` tier "itt", otherwise it has no tier and all its
tracks are dropped with reason `re_sdr_below_itt`. Tiers are nested: an SST track also qualifies for ITT.
"""
from __future__ import annotations

import numpy as np

from models import metrics
from pipelines.filters.config import FilterConfig
from typing import Any

from pipelines.filters.rules import DecisionStage, Rule, as_filter_config, column_values
from pipelines.stage import Batch, batch_len

def remix_scores(scene: np.ndarray, tracks: list[np.ndarray]) -> tuple[float, float]:
    """(Re-SDR, Re-SISDR) of the sum of `tracks` against `scene` (models.metrics: float64, no mean removal)."""
    if not tracks:
        raise ValueError("remix needs at least one track")
    for i, t in enumerate(tracks):
        if len(t) != len(scene):
            raise ValueError(f"track {i} has {len(t)} frames, scene has {len(scene)}")
    stacked = np.stack([np.asarray(t, dtype=np.float64) for t in tracks])
    ref = np.asarray(scene, dtype=np.float64)
    return float(metrics.re_sdr(stacked, ref)), float(metrics.re_sisdr(stacked, ref, zero_mean=False))


def tier_of(re_sdr: float, re_sisdr: float, cfg: FilterConfig) -> str:
    """"sst", "itt" or "" (no tier); both metrics must clear the bound, strictly."""
    worst = min(re_sdr, re_sisdr)
    if not np.isfinite(worst):
        return ""
    if worst > cfg.sst_min_db:
        return "sst"
    if worst > cfg.itt_min_db:
        return "itt"
    return ""


class RemixDecision(DecisionStage):
    """Adds `tier` and the `remix` keep flag from `re_sdr_db`/`re_sisdr_db` columns."""

    def __init__(self, cfg: FilterConfig | dict[str, Any]) -> None:
        cfg = as_filter_config(cfg)
        self.cfg = cfg
        rule = Rule("remix", "re_min_db", ">", cfg.itt_min_db, "re_sdr_below_itt", enabled=cfg.remix_enabled)
        super().__init__("decide_remix", [rule])
        self.inputs = ("re_sdr_db", "re_sisdr_db")
        self.outputs = (*self.outputs, "re_min_db", "tier")

    def __call__(self, batch: Batch) -> Batch:
        re_sdr = column_values(batch, "re_sdr_db")
        re_sisdr = column_values(batch, "re_sisdr_db")
        with np.errstate(invalid="ignore"):
            worst = np.minimum(re_sdr, re_sisdr)
        out = super().__call__({**batch, "re_min_db": worst})
        if self.cfg.remix_enabled:
            out["tier"] = [tier_of(a, b, self.cfg) for a, b in zip(re_sdr, re_sisdr)]
        else:
            # without the scene check every candidate is ITT material; SST still needs a measured remix
            out["tier"] = [tier_of(a, b, self.cfg) or "itt" for a, b in zip(re_sdr, re_sisdr)]
        assert len(out["tier"]) == batch_len(batch)
        return out
