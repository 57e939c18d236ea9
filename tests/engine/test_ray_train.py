"""Ray Train for the separator (real Ray, 2 CPU workers, gloo DDP): one step equals the single-process step on the
same global batch; a worker killed mid-epoch resumes from the last checkpoint and ends where an uninterrupted
single-process run ends. `fit()` costs ~15 s of start-up each, so the models and data are tiny."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import torch

from engine.ray_train import FitSpec, fit_separator, placeable_workers, run_spec, shard_streams, val_samples
from models.separator.checkpoint import load_checkpoint
from models.separator.config import SeparatorConfig
from separator_data import synthetic_samples, write_samples

TINY = dict(width=24, segment_s=0.5, batch_size=4, threads=1, lr=1e-3, lr_schedule="cosine", val_max=4, device="cpu")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("sep_stores")
    write_samples(root / "train", list(synthetic_samples(10, seconds=0.5, seed=1, silent_every=4)), max_count=4)
    write_samples(root / "val", list(synthetic_samples(4, seconds=0.5, seed=2)))
    return str(root / "train"), str(root / "val")


def _spec(stores: tuple[str, str], out: Path, hook=None, **cfg) -> FitSpec:
    train, val = stores
    return FitSpec(separator=SeparatorConfig(**{**TINY, **cfg}), streams=partial(shard_streams, [train], 16000),
                   val=partial(val_samples, [val], 16000, 4), out_dir=str(out), step_hook=hook)


def _assert_close(a: Path, b: Path, atol: float) -> None:
    sa, sb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    assert sa.keys() == sb.keys()
    worst = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)
    assert worst < atol, worst


@pytest.mark.timeout(240)
def test_two_workers_one_step_equals_single_process(ray_local, stores, tmp_path: Path) -> None:
    single = run_spec(_spec(stores, tmp_path / "single", max_steps=1, steps_per_epoch=1))
    ddp = fit_separator(_spec(stores, tmp_path / "ddp", max_steps=1, steps_per_epoch=1), num_workers=2)
    assert ddp.steps == single.steps == 1
    _assert_close(ddp.last, single.last, atol=2e-6)
    # the step moved the weights (so equality above is not trivially the initial state)
    from models.separator.presets import build_model, model_hparams

    torch.manual_seed(0)
    fresh = build_model("tiny", model_hparams(SeparatorConfig(**TINY), 256)).state_dict()
    moved = max(float((load_checkpoint(single.last).state_dict[k] - v).abs().max()) for k, v in fresh.items())
    assert moved > 1e-4
    assert ddp.history[0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], abs=1e-4)
    assert ddp.history[0]["val_loss"] == pytest.approx(single.history[0]["val_loss"], abs=1e-4)


@pytest.mark.timeout(360)
def test_killed_worker_resumes_from_last_checkpoint(ray_local, stores, tmp_path: Path) -> None:
    marker, steps_log = tmp_path / "crashed", tmp_path / "steps.log"

    def crash_once(step: int) -> None:
        import ray.train

        rank = ray.train.get_context().get_world_rank()
        with open(steps_log, "a") as fh:
            fh.write(f"{rank}:{step}\n")
        if rank == 1 and step == 3 and not marker.exists():
            marker.write_text("x")
            os._exit(1)  # the worker process dies mid-epoch, after the checkpoint of step 2

    res = fit_separator(_spec(stores, tmp_path / "ddp", crash_once, max_steps=6, steps_per_epoch=2), num_workers=2,
                        max_failures=1)
    assert marker.exists() and res.steps == 6 and res.epochs == 3 and len(res.history) == 3
    rank0 = [int(line.split(":")[1]) for line in steps_log.read_text().split() if line.startswith("0:")]
    # steps 1-2 ran once (resumed from the step-2 checkpoint, not from scratch), step 3 again after the restart
    assert rank0.count(1) == rank0.count(2) == 1 and rank0.count(3) >= 1 and rank0[-4:] == [3, 4, 5, 6]
    straight = run_spec(_spec(stores, tmp_path / "single", max_steps=6, steps_per_epoch=2))
    assert [h["step"] for h in res.history] == [h["step"] for h in straight.history] == [2, 4, 6]
    _assert_close(res.last, straight.last, atol=1e-4)
    for a, b in zip(res.history, straight.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-3)


def test_ranks_are_capped_at_the_cluster_cpus_and_divide_the_batch(ray_local) -> None:
    # ray_local has 2 CPUs: a rank Ray cannot place would leave Ray Train waiting without end
    cpus = int(ray_local.cluster_resources()["CPU"])
    assert cpus == 2
    assert placeable_workers(2, 16) == 2 and placeable_workers(1, 16) == 1
    assert placeable_workers(4, 16) == 2  # more ranks than CPUs
    assert placeable_workers(2, 3) == 1  # 2 ranks cannot split a batch of 3


def test_driver_log_filter_drops_the_cleaner_noise_only() -> None:
    from engine.ray_train import _filtered

    seen: list[dict] = []
    handle = _filtered(seen.append)
    handle({"actor_name": "PlacementGroupCleaner", "lines": ["Traceback ...", "ConnectionError: multiple instances"]})
    handle({"actor_name": "RayTrainWorker", "lines": ["epoch 1 step 2 train 1.9", "Reporting training result 1: ..."]})
    handle({"actor_name": "TrainController", "lines": ["Failed to query Ray Train Controller actor state. State API"]})
    assert seen == [{"actor_name": "RayTrainWorker", "lines": ["epoch 1 step 2 train 1.9"]}]
