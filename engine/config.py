"""Config section: how stages are executed (in-process now, Ray later) and the per-step time budget of a run."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage.configio import Section


class EngineConfig(Section):
    """Execution backend selection and the end-to-end job's step budget.

    `rows_per_batch` is the unit of resume: a re-run recomputes at most one batch per stage chain.
    The `*_budget_s` values are wall-clock caps handed to the trainers so `stemforge run` on the demo fits in
    15 minutes on 2 cores (bootstrap separator ~4 min, retrain ~3 min, the rest ~5 min). The mini scorers
    are bounded by their own step counts (clap/judge/pc sections).
    """

    backend: Literal["inprocess"] = "inprocess"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    rows_per_batch: int = Field(16, ge=1)
    batch_sizes: dict[str, int] = Field(default_factory=dict, description="per-stage batch size overrides by stage name")
    separator_budget_s: float = Field(240.0, gt=0)
    retrain_budget_s: float = Field(180.0, gt=0)
    retrain_ratios: dict[str, float] = Field(default_factory=lambda: {"synthetic": 0.5, "itt": 0.25, "sst": 0.25}, description="mixing ratios of the retraining streams")
    eval_max_items: int = Field(64, ge=1, description="held-out synthetic test mixtures evaluated per separator")
    synthetic_counts: dict[str, int] = Field(default_factory=lambda: {"train": 1600, "val": 48, "test": 64},
                                             description="synthetic tuples rendered per source split")
    pseudo_label_splits: list[str] = Field(default_factory=lambda: ["train"], description="natural-scene splits pseudo-labelled")
    natural_eval_split: str = Field("test", description="held-out natural scenes evaluated against their audit stems")
    itt_max_others: int = Field(2, ge=1)
    allow_config_change: bool = Field(False, description="continue a run directory whose config hash differs")
    scorer_steps: dict[str, int] = Field(default_factory=dict, description="run-only caps on scorer training steps: "
                                         "clap, judge_pretrain, judge_finetune, pc (absent = the scorer section's value)")
    separator_queries: Literal["config", "run_clap"] = Field(
        "config", description="run_clap: train the run's mini CLAP first and embed the separators' queries with its "
        "text tower (clap:<checkpoint>); config: use separator.text_encoder as given (e.g. hash)")
    parallel_scorers: bool = Field(True, description="train the mini scorers in a second process while separator_0 "
                                   "trains (both are single-threaded; uses the second core)")
    final_pseudo_label: bool = Field(True, description="also pseudo-label with the last separator (measures its Re-SDR; no retrain)")
