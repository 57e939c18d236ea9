"""The resolved stemforge configuration: one typed, frozen section per room, composed here.

Why in `engine`: the step functions take it and the flows above pass it down; each section class lives next to
the code it configures (lower layers never import this module). Frozen (storage.configio.Section): a step cannot
change the config another step reads; derive a variant with `with_overrides` or `model_copy(update=...)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from engine.config import EngineConfig
from models.aesthetics.config import PCConfig
from models.clap.config import ClapConfig
from models.judge.config import JudgeConfig
from models.separator.config import SeparatorConfig
from pipelines.corpus.config import CorpusConfig
from pipelines.filters.config import FilterConfig
from pipelines.mixing.config import MixingConfig
from pipelines.pseudolabel.config import PseudoLabelConfig
from storage.audio import AudioConfig
from storage.configio import Section, apply_overrides, load_config, validate
from storage.shards.config import ShardConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


class RunSection(Section):
    """Where a run writes, which seed drives every random choice, and when the relabel cycle stops.

    The cycle (flows/cycle.py, rule in engine/convergence.py) stops after iteration k when k >= `min_iterations`
    and the gain of separator k over separator k-1 on the *validation* natural scenes (`stop_metric`) is below
    `min_gain_db`, or at `max_iterations`. The test scenes only report."""

    name: str = "demo"
    out_root: str = "runs"
    seed: int = 0
    max_iterations: int = Field(3, ge=1, description="relabel iterations at most (ClearSep fixes three)")
    min_iterations: int = Field(1, ge=1, description="iterations before the stop rule may end the cycle")
    min_gain_db: float = Field(0.2, description="stop when an iteration gains less than this on the validation scenes")
    stop_metric: Literal["auto", "natural_sdri", "re_sdr"] = Field(
        "auto", description="natural_sdri: SDRi against audit stems of the validation scenes; re_sdr: the label-free "
        "mean remix Re-SDR of the validation scenes' pseudo-labels; auto: natural_sdri where audit stems exist")
    stop_split: str = Field("val", description="natural-scene split the stop rule reads (never the test split)")


class StemforgeConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    mixing: MixingConfig = Field(default_factory=MixingConfig)
    shards: ShardConfig = Field(default_factory=ShardConfig)
    separator: SeparatorConfig = Field(default_factory=SeparatorConfig)
    clap: ClapConfig = Field(default_factory=ClapConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    pc: PCConfig = Field(default_factory=PCConfig)
    pseudo_label: PseudoLabelConfig = Field(default_factory=PseudoLabelConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @model_validator(mode="after")
    def _check(self) -> "StemforgeConfig":
        # caught when the config loads, not when the first retrain starts minutes into a run
        if self.engine.retrain_warmup_steps and self.separator.lr_schedule != "cosine":
            raise ValueError(f"engine.retrain_warmup_steps {self.engine.retrain_warmup_steps} needs "
                             f"separator.lr_schedule: cosine (got {self.separator.lr_schedule!r})")
        return self


def load(path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()) -> StemforgeConfig:
    """Load a preset (default: configs/demo.yaml when present, else built-in defaults) with overrides."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(StemforgeConfig, path, overrides)


def with_overrides(cfg: StemforgeConfig, overrides: dict[str, Any]) -> StemforgeConfig:
    """A re-validated copy of a frozen config with dotted-key overrides ({"run.seed": 3})."""
    data = apply_overrides(cfg.model_dump(mode="json"), [f"{k}={_yaml_scalar(v)}" for k, v in overrides.items()])
    return validate(StemforgeConfig, data, "<overrides>")


def _yaml_scalar(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: the override parser reads it back with its type


# Keys that change how or where a run executes, or when its cycle stops, but not what any step computes: a run
# directory continues when only these change (another device, more actors, a higher max_iterations). Everything
# else is part of the run's identity (`work_hash`).
EXECUTION_KEYS: dict[str, tuple[str, ...]] = {
    "run": ("name", "out_root", "max_iterations", "min_iterations", "min_gain_db"),
    # engine.final: the final stage comes after the cycle; its steps re-run when it changes (engine/steps.py)
    "engine": ("backend", "ray", "device", "batch_sizes", "actor_cpus", "actor_gpus", "task_cpus", "replicas",
               "max_retries", "train_use_gpu", "train_max_failures", "parallel_scorers", "allow_config_change", "final",
               "review_per_filter"),
    "corpus.demo": ("workers",),
    "mixing": ("cache_clips", "tune_allocator", "encode_threads"),
    "clap": ("device", "batch_size"), "judge": ("device", "batch_size"), "pc": ("device", "batch_size"),
    "separator": ("device", "infer_batch", "workers"),
}


def work_dict(cfg: StemforgeConfig) -> dict[str, Any]:
    """The config as JSON without its execution keys."""
    data = cfg.model_dump(mode="json")
    for path, keys in EXECUTION_KEYS.items():
        node = data
        for part in path.split("."):
            node = node[part]
        for k in keys:
            node.pop(k, None)
    return data


def work_hash(cfg: StemforgeConfig) -> str:
    """Hash of what the run computes: the run directory's identity (engine/workspace.py)."""
    import hashlib
    import json

    payload = json.dumps(work_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
