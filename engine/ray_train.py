"""Ray Train for the separator: `TorchTrainer` over the one training loop of models/separator/train.py.

Why this shape:
- One loop. Each rank runs `train_separator` unchanged; Ray Train sets up `torch.distributed` (gloo on CPU, nccl
  on CUDA), the loop wraps the model in DDP and trains on its slots of every global batch (`DrawPlan`), so one
  worker is the single-process run and W workers compute the same averaged gradient.
- Data built inside each worker. A `FitSpec` carries the separator config and *callables* that build the sample
  sources and validation set (`ShardSource` holds only a store's index; ITT/SST lists are built from the tier stores
  where they are used), so no audio crosses the object store and every rank reads shards through `storage`.
- Checkpoints are the run directory's own `last.pt` / `best.pt` (rank 0 writes them atomically in the step's folder;
  Ray's run files go to `<out>/ray_train`). A lost worker fails the group; `FailureConfig(max_failures)` restarts
  it and every rank resumes from `last.pt` at its step, with the same draws as an uninterrupted run.
- Results are read from those checkpoints (`load_result`), never from `Result.metrics` (None for a loop that
  reports metrics without a Ray checkpoint, as here).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from models.separator.config import SeparatorConfig

if TYPE_CHECKING:  # torch loads only where training runs
    from models.separator.train import TrainResult

log = logging.getLogger("stemforge.ray_train")

StreamsFn = Callable[[], Sequence[tuple[Any, float]]]
ValFn = Callable[[], list[dict[str, Any]]]

# Ray Train V2 starts a detached `PlacementGroupCleaner` actor per fit that polls the State API every second. It
# warns "Failed to query Ray Train Controller actor state" on every failed query (environment.md), and where more than
# one Ray instance runs on the machine its monitor thread dies with a traceback ("Found multiple active Ray
# instances"). Harmless (the placement group is still removed with the controller) but it floods the terminal of a
# `stemforge run`: the driver drops that actor's forwarded lines and the known messages.
NOISE_ACTOR = "PlacementGroupCleaner"
NOISE = ("Failed to query Ray Train Controller actor state", "Reporting training result",
         # Ray's own warning about its internal PreemptionWatcher actor (ray#53727): nothing a user can act on
         "has constructor arguments in the object store and max_restarts > 0")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in NOISE)


def _filtered(handler: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def handle(data: dict[str, Any]) -> None:
        if NOISE_ACTOR in str(data.get("actor_name") or ""):
            return
        lines = [ln for ln in data.get("lines", []) if not any(n in ln for n in NOISE)]
        if lines:
            handler({**data, "lines": lines})
    handle.stemforge_filtered = True  # type: ignore[attr-defined]
    return handle


def quiet_train_logs() -> None:
    """Filter the cleaner's noise from this process's logging and from the worker lines Ray forwards to the driver
    (Ray's log dispatcher is private API: if it moves, the lines simply show again)."""
    flt = _DropNoise()
    for name in ("ray.train.v2._internal.execution.controller.placement_group_cleaner", "ray.train", "ray"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in lg.filters):
            lg.addFilter(flt)
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # pragma: no cover - a Ray without the dispatcher
        return
    with dispatcher._lock:
        dispatcher.handlers = [(name, h if getattr(h, "stemforge_filtered", False) else _filtered(h))
                               for name, h in dispatcher.handlers]


@dataclass
class FitSpec:
    """Everything a rank needs, picklable: the separator section, builders of its data, where to write."""

    separator: SeparatorConfig
    streams: StreamsFn
    val: ValFn
    out_dir: str
    init: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    step_hook: Callable[[int], None] | None = None  # called after every optimiser step (tests inject faults here)


def shard_streams(dirs: Sequence[str], sample_rate: int) -> list[tuple[Any, float]]:
    """One `ShardSource` over `dirs`, weight 1 (the bootstrap's synthetic store)."""
    from models.separator.data import ShardSource

    return [(ShardSource(list(dirs), sample_rate), 1.0)]


def given(value: Any) -> Any:
    """A `FitSpec` builder for data already built by the caller (sources holding only an index, a small
    validation list): `partial(given, value)`."""
    return value


def val_samples(dirs: Sequence[str], sample_rate: int, limit: int) -> list[dict[str, Any]]:
    from models.separator.data import read_samples

    return read_samples(list(dirs), sample_rate, limit)


def run_spec(spec: FitSpec, on_epoch: Callable[[dict[str, Any]], None] | None = None,
             device: str | None = None) -> "TrainResult":
    """The loop of one rank (or of the whole fit in-process): build the data, call `train_separator`."""
    from models.separator.train import train_separator

    scfg = spec.separator if device is None else spec.separator.model_copy(update={"device": device})
    return train_separator(scfg, spec.streams(), spec.val(), spec.out_dir, init=spec.init, lineage=spec.lineage,
                           on_epoch=on_epoch, on_step=spec.step_hook)


def _worker_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point of every rank."""
    import ray.train
    import ray.train.torch

    quiet_train_logs()
    spec: FitSpec = config["spec"]
    device = ray.train.torch.get_device()

    def report(metrics: dict[str, Any]) -> None:
        # a barrier across ranks, and the controller's view of progress; checkpoints stay the run's own files
        ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    run_spec(spec, on_epoch=report, device=str(device))


def placeable_workers(num_workers: int, batch_size: int) -> int:
    """The DDP ranks a fit can have on the connected Ray cluster: at most its CPUs now and a divisor of the global
    batch. Why: Ray Train waits without end for a rank it cannot place, so a cluster that lost a node (or is smaller
    than the config assumed) would hang the run; it trains on fewer ranks instead, with a warning (the caller records
    the ranks used)."""
    import ray

    have = max(1, int(ray.cluster_resources().get("CPU", 1.0)))
    ranks = max(w for w in range(1, min(num_workers, have) + 1) if batch_size % w == 0)
    if ranks < num_workers:
        log.warning("Ray Train: %d worker(s) asked, the Ray cluster has %d CPU(s): training on %d rank(s)",
                    num_workers, have, ranks)
    return ranks


def fit_separator(spec: FitSpec, num_workers: int = 1, use_gpu: bool = False, max_failures: int = 2,
                  cpus_per_worker: float = 1.0) -> "TrainResult":
    """Train under `TorchTrainer` with `num_workers` DDP ranks on the current Ray instance (the caller's
    `ray_session`); returns the result recorded in `spec.out_dir`'s checkpoints."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from models.separator.train import load_result

    if not ray.is_initialized():
        raise RuntimeError("fit_separator needs a Ray instance (engine.ray_runtime.ray_session)")
    if spec.separator.batch_size % num_workers:
        raise ValueError(f"separator.batch_size {spec.separator.batch_size} is not divisible by "
                         f"engine.train_workers {num_workers}")
    quiet_train_logs()
    out = Path(spec.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = FitSpec(**{**spec.__dict__, "out_dir": str(out)})  # workers chdir into Ray's trial dir: absolute paths
    resources: dict[str, float] = {"CPU": float(cpus_per_worker)}
    if use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        _worker_loop, train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name="ray_train", storage_path=str(out / "ray_train"),
                             failure_config=FailureConfig(max_failures=max_failures)))
    log.info("Ray Train: %d worker(s), %s, into %s", num_workers, "GPU/nccl" if use_gpu else "CPU/gloo", out)
    trainer.fit()
    return load_result(out)


def resolve_use_gpu(engine_cfg: Any, separator_device: str) -> bool:
    """`engine.train_use_gpu`, or when null: CUDA on this machine and the configured devices allow it (a logical
    GPU on a CPU-only machine, as in tests, must not select nccl)."""
    if engine_cfg.train_use_gpu is not None:
        return bool(engine_cfg.train_use_gpu)
    if engine_cfg.device == "cpu" or separator_device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


__all__ = ["FitSpec", "fit_separator", "given", "quiet_train_logs", "resolve_use_gpu", "run_spec", "shard_streams", "val_samples"]
