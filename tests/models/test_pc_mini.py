"""Mini PC estimator: the documented proxy target, training signal, scorer round trip and level invariance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.aesthetics import PCConfig, build_pc
from models.aesthetics.mini import background_noise, make_pc_example, proxy_pc
from models.aesthetics.train import build_model, evaluate_pc, save_pc, train_pc
from models.judge.checkpoint import CheckpointError
from models.judge.tuples import SourcePool

SR = 16000


def tiny_pool(rng: np.random.Generator) -> SourcePool:
    t = np.arange(int(1.5 * SR)) / SR
    clips, labels = [], []
    for _ in range(3):
        clips.append((0.3 * np.sin(2 * np.pi * rng.uniform(500, 900) * t)).astype(np.float32)); labels.append("beep")
        clips.append((0.3 * np.sign(np.sin(2 * np.pi * rng.uniform(80, 120) * t))).astype(np.float32)); labels.append("buzz")
        env = (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > 0.5).astype(np.float32)
        clips.append((0.3 * env * np.sin(2 * np.pi * rng.uniform(2000, 3000) * t)).astype(np.float32)); labels.append("chirp")
        clips.append((0.2 * np.sin(2 * np.pi * 150 * t) * np.sin(2 * np.pi * 4 * t)).astype(np.float32)); labels.append("wobble")
    return SourcePool(clips, labels, SR)


def test_proxy_target_keeps_the_papers_threshold_meaning() -> None:
    assert proxy_pc(1, None) == pytest.approx(1.5) and proxy_pc(1, None) < 2.5
    assert proxy_pc(2, None) > 2.5 and proxy_pc(3, None) > proxy_pc(2, None)
    assert proxy_pc(1, -40.0) == proxy_pc(1, None)  # inaudible background adds nothing
    assert proxy_pc(1, -15.0) > proxy_pc(1, -25.0) and proxy_pc(1, 0.0) == pytest.approx(3.0)
    assert proxy_pc(50, 0.0) == 10.0


def test_examples_match_their_labels(rng: np.random.Generator) -> None:
    pool = tiny_pool(rng)
    for _ in range(20):
        x, y, k, bg = make_pc_example(pool, rng, SR, 4, 0.5, (-5.0, 10.0))
        assert x.shape == (SR,) and np.abs(x).max() <= 0.9 + 1e-6
        assert 1 <= k <= 4 and y == pytest.approx(proxy_pc(k, bg))
    noise = background_noise(rng, SR, SR)
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)


def test_training_orders_complexity_and_scorer_round_trips(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.set_num_threads(1)
    cfg = PCConfig(clip_seconds=1.0, train_batch=24, steps=120, lr=3e-3, channels=48)
    pool = tiny_pool(rng)
    train, held = pool.split_by_clip(0.34, 0)
    model = build_model(cfg)
    train_pc(model, train, cfg, torch.device("cpu"))
    res = evaluate_pc(model, held, cfg, torch.device("cpu"), n=96)
    assert res["pcc"] > 0.5
    by = res["mean_pc_by_sources"]
    assert by["1_no_bg"] < by["3_no_bg"]
    sha = save_pc(tmp_path / "pc.pt", model, cfg)
    scorer = build_pc(PCConfig(checkpoint=str(tmp_path / "pc.pt"), device="cpu"))
    assert scorer.info() == {"backend": "mini", "checkpoint_hash": sha, "version": "stemforge.pc.mini v1"}
    x = np.stack([make_pc_example(held, rng, SR, 4, 0.5, (-5.0, 10.0))[0] for _ in range(6)])
    s = scorer.score(x, SR)
    assert s.shape == (6,) and ((s >= 1) & (s <= 10)).all()
    with torch.no_grad():
        assert np.allclose(s, model(torch.from_numpy(x)).numpy(), atol=1e-5)
    # playback gain must not change production complexity
    assert np.allclose(scorer.score(x * 0.25, SR), s, atol=0.05)


def test_pc_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no PC checkpoint configured"):
        build_pc(PCConfig())
    (tmp_path / "x.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="x.pt: not a readable torch checkpoint"):
        build_pc(PCConfig(checkpoint=str(tmp_path / "x.pt")))


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 11, 150])
def test_one_cycle_schedule_runs_for_any_step_budget(steps: int) -> None:
    import torch

    from models.aesthetics.train import one_cycle

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = one_cycle(opt, 1e-3, steps)  # pc.steps = 10 used to raise ZeroDivisionError
    lrs = []
    for _ in range(steps):
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert len(lrs) == steps and all(lr > 0 for lr in lrs)
