"""What every stage gets to run with, derived from the config in this one place; executors read nothing else.

Why one function: a stage's batch size, its CPUs and GPUs and its replica range used to be spread over stage
attributes, hard-coded `gpus=0` and device keys elsewhere. Here:
- model stages (`uses_models`) run in long-lived actors: `engine.actor_cpus` CPUs, and `engine.actor_gpus` GPUs
  when the run uses GPUs (`engine.device: cuda`, or `auto` with GPUs available to the backend); replicas
  `engine.replicas` = [min, max];
- every other stage runs as tasks with `engine.task_cpus` CPUs;
- batch sizes: `engine.batch_sizes[<stage name>]` overrides; else the model's own section (`pseudo_label`,
  `clap`, `judge`, `pc` `.batch_size`); else the whole task batch (`STATELESS_BATCH`).
Consecutive stages with equal (cpus, gpus, replicas) are fused into one worker by the executors
(`engine/executors/base.py: fuse_groups`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

STATELESS_BATCH = 1024
#: stage name -> config section whose `batch_size` is that stage's batch size
MODEL_BATCH_SECTIONS = {"pseudo_label": "pseudo_label", "score_clap": "clap", "score_judge": "judge", "score_pc": "pc"}


@dataclass(frozen=True)
class Resources:
    """What one replica of a stage needs: Ray's `num_cpus`/`num_gpus`, rows per call, actor pool range."""

    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = STATELESS_BATCH
    min_replicas: int = 1
    max_replicas: int = 1
    kind: Literal["actor", "task"] = "task"
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0:
            raise ValueError(f"resources must be non-negative, got cpus={self.cpus} gpus={self.gpus}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"replicas must satisfy 1 <= min <= max, got [{self.min_replicas}, {self.max_replicas}]")
        if self.kind not in ("actor", "task"):
            raise ValueError(f"kind must be 'actor' or 'task', got {self.kind!r}")

    def fuse_key(self) -> tuple[float, float, int, int]:
        """Stages with the same key share one worker (the batch size stays per stage)."""
        return (self.cpus, self.gpus, self.min_replicas, self.max_replicas)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uses_gpu(cfg: Any, gpus_available: bool) -> bool:
    """`engine.device`: cpu -> no; cuda -> yes (an error when the backend has none); auto -> when available."""
    device = cfg.engine.device
    if device == "cuda" and not gpus_available:
        raise ValueError("engine.device=cuda but the execution backend has no GPUs (set engine.device: auto or cpu)")
    return device == "cuda" or (device == "auto" and gpus_available)


def stage_resources(cfg: Any, name: str, uses_models: bool, gpus_available: bool) -> Resources:
    """Resources of one stage (by its name and whether it holds models) under `cfg`."""
    eng = cfg.engine
    lo, hi = (int(v) for v in eng.replicas)
    if name in eng.batch_sizes:
        batch = int(eng.batch_sizes[name])
    elif name in MODEL_BATCH_SECTIONS:
        batch = int(getattr(cfg, MODEL_BATCH_SECTIONS[name]).batch_size)
    else:
        batch = STATELESS_BATCH
    if uses_models:
        gpus = float(eng.actor_gpus) if uses_gpu(cfg, gpus_available) else 0.0
        return Resources(cpus=float(eng.actor_cpus), gpus=gpus, batch_size=batch, min_replicas=lo, max_replicas=hi,
                         kind="actor", max_retries=int(eng.max_retries))
    return Resources(cpus=float(eng.task_cpus), gpus=0.0, batch_size=batch, min_replicas=lo, max_replicas=hi,
                     kind="task", max_retries=int(eng.max_retries))


def plan_resources(cfg: Any, specs: list[Any], gpus_available: bool) -> list[Any]:
    """`specs` (engine.executors.StageSpec) with their `resources` set from `cfg`; stages are built (cheap, no
    models load) to read their name and `uses_models`."""
    out = []
    for spec in specs:
        stage = spec.build()
        out.append(spec.with_resources(stage_resources(cfg, stage.name, bool(getattr(stage, "uses_models", False)),
                                                       gpus_available)))
    return out
