"""Proxy ratings (documented mapping) and the mini judge network: behaviour that could go wrong."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.judge.config import JudgeConfig
from models.judge.model import AXES, MiniJudge, hash_tokens
from models.judge.proxy_ratings import degrade, log_spectral_distance, ratings_from_measures
from models.judge.train import build_model, evaluate_proxy, proxy_batch, train_proxy_and_ratings
from models.judge.tuples import SourcePool, make_tuple
from storage.audio import write_audio
from storage.manifests import SOURCE_CLIP_SCHEMA, write_manifest

SR = 16000


def tiny_pool(rng: np.random.Generator, seconds: float = 1.5) -> SourcePool:
    t = np.arange(int(seconds * SR)) / SR
    clips, labels = [], []
    for _ in range(3):
        clips.append((0.3 * np.sin(2 * np.pi * rng.uniform(500, 900) * t)).astype(np.float32)); labels.append("beep")
        clips.append((0.3 * np.sign(np.sin(2 * np.pi * rng.uniform(80, 120) * t))).astype(np.float32)); labels.append("buzz")
        clips.append((0.1 * rng.standard_normal(len(t))).astype(np.float32)); labels.append("hiss")
    return SourcePool(clips, labels, SR)


def test_mapping_is_monotonic_and_bounded() -> None:
    best = ratings_from_measures(1.0, -60.0, 0.0, 0.0)
    assert all(best[a] == pytest.approx(5.0) for a in AXES)
    worst = ratings_from_measures(0.0, 60.0, 20.0, 12.0)
    assert all(worst[a] == pytest.approx(1.0) for a in AXES)
    assert ratings_from_measures(0.5, -60, 0, 0)["recall"] < ratings_from_measures(0.8, -60, 0, 0)["recall"]
    assert ratings_from_measures(1, -5, 0, 0)["precision"] < ratings_from_measures(1, -20, 0, 0)["precision"]
    assert ratings_from_measures(1, -60, 0, 9)["faithfulness"] < ratings_from_measures(1, -60, 0, 3)["faithfulness"]
    # one severe flaw pulls overall below the mean of the three axes
    r = ratings_from_measures(1.0, 5.0, 0.0, 0.0)
    assert r["overall"] < (r["recall"] + r["precision"] + r["faithfulness"]) / 3


def test_lsd_ignores_gain_but_sees_filtering(rng: np.random.Generator) -> None:
    x = rng.standard_normal(SR).astype(np.float32)
    assert log_spectral_distance(x, 3.0 * x) == pytest.approx(0.0, abs=1e-3)
    from scipy import signal
    y = signal.sosfilt(signal.butter(4, 500, fs=SR, output="sos"), x)
    assert log_spectral_distance(x, y) > 5.0


def test_degradations_cover_the_scale_and_match_ground_truth(rng: np.random.Generator) -> None:
    pool = tiny_pool(rng)
    ratings = {a: [] for a in AXES}
    for _ in range(150):
        t = make_tuple(pool, rng, SR, 2, 3, (-5.0, 10.0))
        assert np.allclose(t.mixture, t.target + t.residual, atol=1e-5)
        d = degrade(t, rng, SR)
        assert d.output.shape == t.target.shape and np.isfinite(d.output).all()
        if d.params.get("wrong_source"):
            assert d.ratings["recall"] < 1.2 and d.ratings["overall"] < 2.0
        elif d.params["kept"] > 0.999 and d.params["leak_db"] <= -60 and d.params["distortion"] == 0 and d.params["gain_db"] == 0:
            assert np.allclose(d.output, t.target, atol=1e-5) and d.ratings["overall"] == pytest.approx(5.0)
        for a in AXES:
            ratings[a].append(d.ratings[a])
    for a in AXES:
        v = np.asarray(ratings[a])
        assert v.min() >= 1.0 and v.max() <= 5.0
        assert v.min() < 2.0 and v.max() > 4.5, f"{a} does not cover the 1-5 scale"


def test_hash_tokens_pad_and_are_stable() -> None:
    ids, pad = hash_tokens(["A dog barking", ""], vocab=128, max_tokens=5)
    assert ids.shape == (2, 5) and pad[0].tolist() == [False, False, False, True, True]
    assert not pad[1, 0]  # empty text still has one token so attention never sees only padding
    assert torch.equal(hash_tokens(["a dog barking"], 128, 5)[0][0], ids[0])


def test_model_outputs_are_on_the_scale_and_depend_on_inputs(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    model = MiniJudge(dim=32, heads=2, layers=1).eval()
    mix = torch.from_numpy(rng.standard_normal((3, SR)).astype(np.float32) * 0.1)
    scores, logit = model(mix, mix * 0.5, ["a", "b", "c"])
    assert scores.shape == (3, 4) and logit.shape == (3,)
    assert (scores >= 1).all() and (scores <= 5).all()
    other, _ = model(mix, torch.zeros_like(mix), ["a", "b", "c"])
    assert not torch.allclose(scores, other)


def test_training_learns_proxy_task_and_ratings(rng: np.random.Generator) -> None:
    """A few dozen steps on three very different classes must beat chance on held-out tuples."""
    torch.set_num_threads(1)
    cfg = JudgeConfig(dim=32, heads=2, layers=1, clip_seconds=1.0, train_batch=16, pretrain_steps=40,
                      finetune_steps=80, lr=3e-3, min_sources=2, max_sources=3)
    pool = tiny_pool(rng)
    train, held = pool.split_by_clip(0.34, 0)
    assert set(train.label_names) == set(held.label_names) == {"beep", "buzz", "hiss"}
    model = build_model(cfg)
    rep = train_proxy_and_ratings(model, train, cfg, torch.device("cpu"))
    assert rep.proxy_acc > 0.7
    m, o, texts, lab = proxy_batch(held, np.random.default_rng(5), cfg, None)
    with torch.no_grad():
        _, logit = model(torch.from_numpy(m), torch.from_numpy(o), texts)
    assert float(((logit > 0).float().numpy() == lab).mean()) > 0.65
    res = evaluate_proxy(model, held, cfg, torch.device("cpu"), n=96)
    assert res["axes"]["overall"]["pcc"] > 0.4
    assert rep.history[-1]["loss"] < rep.history[0]["loss"]


def test_pool_from_manifest_reports_unusable_input(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    write_audio(path, (0.1 * np.ones(SR)).astype(np.float32), SR)
    row = dict(clip_id="a", path=str(path), sample_rate=SR, num_frames=SR, duration_s=1.0, labels=["x"],
               label_ids=["x"], domain="sound", split="train", content_hash="h", dataset="t")
    write_manifest(tmp_path / "m", SOURCE_CLIP_SCHEMA, [row])
    with pytest.raises(ValueError, match="at least 2 labels"):
        SourcePool.from_manifest(tmp_path / "m", SR)
    with pytest.raises(ValueError, match="no source clips"):
        SourcePool.from_manifest(tmp_path / "m", SR, splits=("test",))
