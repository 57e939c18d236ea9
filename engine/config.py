"""Config section: how stages are executed (in-process now, Ray later) and the per-step time budget of a run."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage.configio import Section


class RayConfig(Section):
    """Where Ray runs. `address: local` starts a Ray instance on this machine (bounded object store, dashboard on
    127.0.0.1, usage stats off); anything else (`auto`, `HOST:PORT`, `ray://...`) joins an existing cluster, and the
    `num_*` / `object_store_mb` / `dashboard_port` / `temp_dir` keys then do not apply."""

    address: str = "local"
    num_cpus: int | None = Field(None, ge=1, description="local only: CPUs Ray may use (null = all cores)")
    num_gpus: int | None = Field(None, ge=0, description="local only: GPUs Ray may use (null = detected)")
    object_store_mb: int = Field(512, ge=64, description="local only: object store size (the default 30% of RAM is too much on small machines)")
    dashboard_port: int | None = Field(None, ge=0, description="local only: dashboard port on 127.0.0.1 (null = Ray's default 8265; 0 = no dashboard)")
    temp_dir: str | None = Field(None, description="local only: Ray's session/log directory (null = Ray's default)")


class FinalConfig(Section):
    """The final separator and judge trained after the relabel cycle stops (`train_final`, `stemforge train final`).

    The final separator trains on synthetic + the kept tiers of the last pseudo-labelling (the same mixing ratios
    as a retrain) for `steps` optimiser steps: fine-tuned from the cycle's last separator when `preset` is that
    separator's preset (`same`), from scratch otherwise (`clapsep` needs separator.clap_checkpoint; a GPU for a useful
    budget). The judge is fine-tuned from the run's judge on human ratings when `judge_ratings` names a table
    (Parquet/CSV: mixture, output, text, overall, recall, precision, faithfulness), else on PROXY ratings (labelled
    as such in the release's model card)."""

    enabled: bool = Field(True, description="stemforge run trains the final separator and judge after the cycle")
    preset: Literal["same", "tiny", "clapsep"] = Field("same", description="final separator preset")
    steps: int = Field(400, ge=1, description="final separator budget in optimiser steps")
    judge_steps: int = Field(200, ge=0, description="judge fine-tuning steps on ratings")
    train_workers: int | None = Field(
        None, ge=1, description="Ray Train workers (DDP ranks) of the final separator (null = engine.train_workers). "
                                "The final judge needs only the corpus and the run's judge, so `stemforge run` trains it "
                                "as a Ray task on the core the bootstrap separator leaves free; the final separator then "
                                "has every core to itself")
    judge_ratings: str | None = Field(None, description="human ratings table for the judge (null: proxy ratings)")


class JudgeCalibrationConfig(Section):
    """Re-calibrate the run's judge on each iteration's separator before it scores that separator's pseudo-labels
    (engine/judge_calibration.py; ratings from the truth of held-out items: a PROXY, models/judge/separator_ratings.py).
    On by default: the calibrated judge, reading the mixture's other labels (models/judge/prompt.py), reaches Pearson
    ~0.6 with true track SDR on the demo's natural candidates (docs/perf/judge_pc.md) and gates (filters.judge_*);
    it costs ~17-20 min of one core per iteration on the demo (a Ray task beside the evaluations)."""

    enabled: bool = Field(True, description="judge_K before every filter_K: the run's judge fine-tuned on separator K's outputs")
    steps: int = Field(4000, ge=1, description="fine-tuning steps per calibration")
    train_tuples: int | None = Field(1600, ge=0, description="synthetic train tuples beside the val store (null: the "
                                     "whole train store; 0: val only): more tuples carried best to natural scenes, and "
                                     "each holds ~2.8 MB of rated examples per 4 s in memory during the step")
    natural_val: bool = Field(True, description="also the natural scenes of run.stop_split with stems (never the test split)")
    clip_s: float | None = Field(4.0, ge=0.0, description="training crop in seconds (null: judge.clip_seconds; 0: whole "
                                 "items): 4 s carried better to 8-s scenes than the judge's 2 s")


class EngineConfig(Section):
    """Execution backend selection and the end-to-end job's step budget.

    `rows_per_batch` is the unit of resume: a re-run recomputes at most one batch per stage chain.
    The separator budgets are optimiser steps (`separator_steps`, `retrain_steps`), so the same config trains the
    same model on every machine; the demo values fit `stemforge run` in 15 minutes on 2 cores (bootstrap ~5 min,
    retrain ~4 min, measured in docs/perf/separator.md). The mini scorers are bounded by their own step counts
    (clap/judge/pc sections).
    """

    backend: Literal["inprocess", "ray"] = "ray"
    ray: RayConfig = Field(default_factory=RayConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    rows_per_batch: int = Field(16, ge=1)
    batch_sizes: dict[str, int] = Field(default_factory=dict, description="per-stage batch size overrides by stage name")
    actor_cpus: float = Field(1.0, gt=0, description="CPUs reserved per model actor (fractional allowed; engine/resources.py)")
    actor_gpus: float = Field(1.0, gt=0, le=8, description="GPUs per model actor when running on GPUs (0.5: two actors share one)")
    task_cpus: float = Field(1.0, gt=0, description="CPUs per task of CPU-only stages; equal to actor_cpus on a CPU "
                             "machine, so the whole filter chain fuses into one actor and audio never crosses the object store")
    replicas: list[int] = Field(default_factory=lambda: [1, 1], min_length=2, max_length=2,
                                description="[min, max] actors per model stage group (Ray Data concurrency)")
    max_retries: int = Field(3, ge=0, description="retries of a task whose worker died (Ray: max_restarts/max_task_retries)")
    separator_steps: int = Field(450, ge=1, description="bootstrap separator budget in optimiser steps")
    retrain_steps: int = Field(350, ge=1, description="retrain budget per iteration in optimiser steps")
    retrain_lr_scale: float = Field(1.0, gt=0.0, le=1.0, description="each retrain's (and its control's) peak learning "
                                    "rate = separator.lr x this: fine-tuning a trained separator at the bootstrap's "
                                    "peak rate may undo what it learnt (both arms alike, so the control stays matched)")
    retrain_warmup_steps: int = Field(0, ge=0, description="each fine-tune's (retrains, their controls, the final "
                                      "separator's) linear LR warm-up in optimiser steps (separator.warmup_steps)")
    train_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks) per separator fit; "
                               "separator.batch_size is the global batch and must be divisible by it")
    train_use_gpu: bool | None = Field(None, description="Ray Train workers on GPUs (null: when the engine device "
                                       "resolves to CUDA)")
    train_max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint before a fit fails")
    retrain_ratios: dict[str, float] = Field(default_factory=lambda: {"synthetic": 0.5, "itt": 0.25, "sst": 0.25}, description="mixing ratios of the retraining streams")
    eval_max_items: int = Field(64, ge=1, description="held-out synthetic test mixtures evaluated per separator")
    synthetic_counts: dict[str, int] = Field(default_factory=lambda: {"train": 1600, "val": 48, "test": 64},
                                             description="synthetic tuples rendered per source split")
    pseudo_label_splits: list[str] = Field(default_factory=lambda: ["train"], description="natural-scene splits pseudo-labelled")
    natural_eval_split: str = Field("test", description="held-out natural scenes evaluated against their audit stems")
    itt_max_others: int = Field(2, ge=1)
    retrain_checkpoint: Literal["end", "best"] = Field(
        "end", description="the checkpoint a retrain, its control and the final separator hand on: end = the weights at "
        "the end of the step budget (annealed by the cosine schedule); best = lowest loss on the synthetic validation "
        "tuples (off-domain for a model fine-tuned on natural pseudo-labels: docs/perf/engine.md)")
    accumulate_tiers: bool = Field(True, description="retrain k trains on the kept tiers of every earlier iteration, "
                                   "not only of iteration k-1 (ClearSep's separated-track set grows with the iterations); "
                                   "a track kept again replaces its earlier version (same scene and label)")
    allow_config_change: bool = Field(False, description="continue a run directory whose config hash differs")
    scorer_steps: dict[str, int] = Field(default_factory=dict, description="run-only caps on scorer training steps: "
                                         "clap, judge_pretrain, judge_finetune, pc (absent = the scorer section's value)")
    separator_queries: Literal["config", "run_clap"] = Field(
        "config", description="run_clap: train the run's mini CLAP first and embed the separators' queries with its "
        "text tower (clap:<checkpoint>); config: use separator.text_encoder as given (e.g. hash)")
    parallel_scorers: bool = Field(True, description="backend ray: train the mini scorers as Ray tasks while separator_0 "
                                   "trains (each single-threaded, on the cores the separator leaves free); inprocess: ignored, "
                                   "the scorers train one after another")
    control: bool = Field(False, description="train a compute-matched control beside every retrain (same init, same "
                          "steps, synthetic only): the engine's gain is measured over it (on by default in the demo)")
    judge_calibration: JudgeCalibrationConfig = Field(default_factory=JudgeCalibrationConfig)
    final: FinalConfig = Field(default_factory=FinalConfig)
    review_per_filter: int = Field(3, ge=0, description="kept and dropped candidates with players per filter on the "
                                   "run's review page (runs/<name>/review/index.html); 0 = no review page")
    final_pseudo_label: bool = Field(True, description="also pseudo-label with the last separator (measures its Re-SDR; no retrain)")
