"""Config section: candidate filters and tiers.

Defaults are the published thresholds (ClearSep App. A.2 for the remix tiers; SAM Audio Table 3 for CLAP, PC and
silence; SAJ §III-E.2 for the judge). Every filter can be switched off; a switched-off filter still records its
score when a scorer ran, but never drops a candidate.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from storage.configio import Section


class FilterConfig(Section):
    """Candidate filters and tiers. A candidate is kept only if every enabled filter passes."""

    remix_enabled: bool = True
    itt_min_db: float = Field(10.0, description="ITT tier: Re-SDR and Re-SISDR of the scene remix both above this")
    sst_min_db: float = Field(15.0, description="SST tier: Re-SDR and Re-SISDR both above this")
    clap_target_enabled: bool = True
    clap_target_min: float = Field(0.35, description="keep if CLAP(text, target) > this")
    clap_residual_enabled: bool = True
    clap_residual_max: float = Field(0.0, description="keep if CLAP(text, residual) < this")
    pc_enabled: bool = True
    pc_max: float = Field(2.5, description="keep if production complexity of the target < this")
    silence_enabled: bool = True
    silence_ratio_max: float = Field(0.95, ge=0.0, le=1.0, description="keep if the silent share of the target < this")
    silence_threshold_dbfs: float = Field(-40.0, description="frames quieter than this (RMS dBFS) count as silent")
    silence_frame_ms: float = Field(10.0, gt=0)
    judge_enabled: bool = True
    judge_min: float = Field(3.0, description="keep if judge overall >= this (1-5 scale; 3.0 is a predicted track SDR "
                             "of 2.5 dB for a separator-calibrated judge, whose overall maps -10..15 dB to 1..5)")
    judge_sweep: list[float] = Field(default_factory=lambda: [2.6, 3.0, 3.4, 3.8, 4.2])

    @model_validator(mode="after")
    def _tiers_ordered(self) -> "FilterConfig":
        if self.sst_min_db < self.itt_min_db:
            raise ValueError(f"sst_min_db ({self.sst_min_db}) must be >= itt_min_db ({self.itt_min_db}): SST is the stricter tier")
        return self
