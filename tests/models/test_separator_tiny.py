"""The `tiny` preset: size, conditioning, loss, training, checkpoints, exact resume, windowed inference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.separator.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.separator.config import SeparatorConfig
from models.separator.data import ShardStream, make_example, query_texts
from models.separator.infer import Separator
from models.separator.presets import build_model, model_hparams
from models.separator.synthetic import synthetic_samples, write_tar_shard
from models.separator.train import separation_loss, train_separator
from models.text import HashTextEncoder, load_text_encoder

torch.set_num_threads(1)
SMALL = dict(width=48, segment_s=1.0, batch_size=4, steps_per_epoch=3, threads=1)


def test_default_tiny_size_and_shapes() -> None:
    cfg = SeparatorConfig()
    model = build_model("tiny", model_hparams(cfg, 256))
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n <= 3_000_000, n
    mix = torch.randn(2, 16000) * 0.1
    out = model(mix, torch.randn(2, 256), torch.zeros(2, 256))
    assert out.estimate.shape == (2, 16000) and out.gate_logit.shape == (2,)
    with pytest.raises(ValueError, match="shape"):
        model(mix, torch.randn(2, 256), torch.zeros(2, 128))


def test_gru_stride_keeps_shapes_and_loads_old_hparams() -> None:
    """Pooled-GRU models must map any length (odd frame counts too) to the input length, and checkpoints written
    before `gru_stride` existed (no such hparam) must build the stride-1 model they were trained as."""
    cfg = SeparatorConfig(width=48, gru_stride=2, gru_layers=2)
    hp = model_hparams(cfg, 32)
    assert hp["gru_stride"] == 2 and hp["gru_layers"] == 2
    model = build_model("tiny", hp).eval()
    for n in (16000, 16000 + 256 * 3 + 17):
        out = model(torch.randn(2, n) * 0.1, torch.randn(2, 32), torch.zeros(2, 32))
        assert out.estimate.shape == (2, n) and torch.isfinite(out.estimate).all()
    old = {k: v for k, v in model_hparams(SeparatorConfig(width=48), 32).items() if k not in ("gru_stride", "gru_layers")}
    assert build_model("tiny", old).gru_stride == 1


def test_text_encoder_is_deterministic_and_distinct() -> None:
    enc = HashTextEncoder(dim=64)
    a = enc.embed(["dog barking", "dog barking", "whistle"])
    assert torch.allclose(a[0], a[1]) and torch.allclose(a.norm(dim=1), torch.ones(3))
    assert float(a[0] @ a[2]) < 0.5
    assert torch.allclose(load_text_encoder("hash:64").embed(["whistle"]), a[2:3])
    assert float(enc.embed(["dogs barking"])[0] @ a[0]) > 0.5  # shared word/trigrams
    with pytest.raises(ValueError, match="no letters"):
        enc.embed(["   "])
    with pytest.raises(ValueError, match="unknown text encoder"):
        load_text_encoder("bert")


def test_loss_prefers_truth_and_handles_silent_targets() -> None:
    g = torch.Generator().manual_seed(0)
    tgt, other = torch.randn(3, 4000, generator=g), torch.randn(3, 4000, generator=g)
    mix = tgt + other
    silent = torch.tensor([False, False, True])
    target = torch.where(silent[:, None], torch.zeros_like(tgt), tgt)
    good = separation_loss(target + 0.01 * other, target, mix, silent, 0.9, -50.0)
    bad = separation_loss(mix, target, mix, silent, 0.9, -50.0)
    assert torch.isfinite(good).all() and torch.isfinite(bad).all()
    assert (good < bad).all()
    # silent target: perfectly silent output hits the -50 dB floor instead of -inf
    floor = separation_loss(torch.zeros_like(mix), target, mix, silent, 0.9, -50.0)[2]
    assert floor.item() == pytest.approx(-50.0, abs=0.01)


def test_query_sides_and_silence_augmentation() -> None:
    s = next(iter(synthetic_samples(1, seconds=1.0, seed=3)))
    s["json"]["query_mode"] = "posneg"
    rng = np.random.default_rng(0)
    modes = set()
    for _ in range(40):
        ex = make_example(s, rng, 8000, {"pos": 0.25, "neg": 0.25, "posneg": 0.5}, 0.0, [])
        modes.add((ex.positive is not None, ex.negative is not None))
        assert np.abs(ex.target).max() > 0
    assert modes == {(True, False), (False, True), (True, True)}
    ex = make_example(s, rng, 8000, {}, 1.0, ["low hum", "whistle", "hiss", "rumble", "ticking clock", "bird chirp"])
    assert ex.silent and not np.any(ex.target)
    assert ex.positive not in s["json"]["target_labels"] + s["json"]["residual_labels"]
    s["json"]["query_mode"] = "bogus"
    with pytest.raises(ValueError, match="query_mode"):
        query_texts(s["json"])


def test_overfits_a_fixed_batch() -> None:
    """Gradient steps on one batch must drive the separation loss down a lot (the model can learn at all)."""
    torch.manual_seed(0)
    cfg = SeparatorConfig(width=48)
    model = build_model("tiny", model_hparams(cfg, 32))
    enc = HashTextEncoder(dim=32)
    samples = list(synthetic_samples(4, seconds=1.0, seed=11))
    mix = torch.from_numpy(np.stack([s["mix"] for s in samples]))
    tgt = torch.from_numpy(np.stack([s["target"] for s in samples]))
    pos = enc.embed([s["json"]["positive_text"] for s in samples])
    silent = torch.zeros(4, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = separation_loss(model(mix, pos, torch.zeros_like(pos)).estimate, tgt, mix, silent, 0.9, -30.0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 3.0, losses


def _shards(tmp: Path) -> tuple[ShardStream, list[dict]]:
    write_tar_shard(tmp / "train" / "s-000000.tar", list(synthetic_samples(20, seconds=1.5, seed=1, silent_every=5)))
    return ShardStream([tmp / "train"]), list(synthetic_samples(6, seconds=1.5, seed=2, silent_every=3))


def test_training_learns_and_conditioning_matters(tmp_path: Path) -> None:
    stream, val = _shards(tmp_path)
    cfg = SeparatorConfig(**SMALL, max_epochs=4, lr=3e-3)
    res = train_separator(cfg, [(stream, 1.0)], val, tmp_path / "run")
    assert res.epochs == 4 and res.steps == 12
    assert all(np.isfinite(h["val_loss"]) and np.isfinite(h["si_sdri"]) for h in res.history)
    ck = load_checkpoint(res.best)
    assert ck.preset == "tiny" and ck.lineage["streams"][0]["shards"] and ck.metrics["epoch"] >= 1
    assert ck.code_version and ck.text_encoder.startswith("hash")
    sep = Separator.load(res.best, "cpu", gate_threshold=0.0)
    mix = val[0]["mix"][None]
    a = sep.separate(mix, 16000, ["whistle"], [None])
    b = sep.separate(mix, 16000, ["rumble"], [None])
    assert np.abs(a - b).max() > 1e-5  # the query changes the output


def test_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    stream, val = _shards(tmp_path)
    straight = train_separator(SeparatorConfig(**SMALL, max_epochs=2), [(stream, 1.0)], val, tmp_path / "a")
    train_separator(SeparatorConfig(**SMALL, max_epochs=1), [(stream, 1.0)], val, tmp_path / "b")
    resumed = train_separator(SeparatorConfig(**SMALL, max_epochs=2), [(stream, 1.0)], val, tmp_path / "b")
    assert resumed.steps == straight.steps == 6
    sa, sb = load_checkpoint(straight.last).state_dict, load_checkpoint(resumed.last).state_dict
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), k


def test_finetune_init_and_checkpoint_validation(tmp_path: Path) -> None:
    stream, val = _shards(tmp_path)
    base = train_separator(SeparatorConfig(**SMALL, max_epochs=1), [(stream, 1.0)], val, tmp_path / "base")
    tuned = train_separator(SeparatorConfig(**SMALL, max_epochs=1), [(stream, 1.0)], val, tmp_path / "ft", init=base.best)
    assert load_checkpoint(tuned.best).lineage["init"]["path"] == str(base.best)
    with pytest.raises(ValueError, match="preset"):
        train_separator(SeparatorConfig(**{**SMALL, "max_epochs": 1}, preset="clapsep"), [(stream, 1.0)], val,
                        tmp_path / "x", init=base.best)
    ck = load_checkpoint(base.best)
    ck.state_dict = {k: v for k, v in ck.state_dict.items() if not k.startswith("out.")}
    save_checkpoint(tmp_path / "broken.pt", ck)
    with pytest.raises(CheckpointError, match="broken.pt.*missing"):
        Separator.load(tmp_path / "broken.pt", "cpu")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_windowed_inference_crossfade_is_seamless(tmp_path: Path) -> None:
    """With the mask forced to 1 the separator must return its input exactly, whatever the length and windows."""
    cfg = SeparatorConfig(width=32, presence_gate=False, segment_s=0.5)
    model = build_model("tiny", model_hparams(cfg, 32))
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.fill_(30.0)
    from models.separator.checkpoint import Checkpoint, trainable_state

    save_checkpoint(tmp_path / "ones.pt", Checkpoint("tiny", model.hparams, trainable_state(model), "hash:32",
                                                     cfg.model_dump()))
    sep = Separator.load(tmp_path / "ones.pt", "cpu")
    rng = np.random.default_rng(0)
    items = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (3000, 8000, 20011)]
    outs = sep.separate(items, 16000, ["a", "b", "c"], [None, None, "d"])
    for x, y in zip(items, outs):
        assert y.shape == x.shape and np.allclose(x, y, atol=1e-4)
    # another input rate goes through resampling and comes back at the caller's length
    y = sep.separate(np.stack([items[1], items[1]]), 8000, ["a", "a"])
    assert y.shape == (2, 8000)
    with pytest.raises(ValueError, match="positive or a negative"):
        sep.separate([items[0]], 16000, [None], [None])


def test_shard_stream_with_dataloader_workers(tmp_path: Path) -> None:
    samples = list(synthetic_samples(6, seconds=0.5, seed=7))
    write_tar_shard(tmp_path / "s" / "a-000000.tar", samples[:3])
    write_tar_shard(tmp_path / "s" / "a-000001.tar", samples[3:])
    stream = ShardStream([tmp_path / "s"])
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    keys = [s["__key__"] for s in loader]
    assert sorted(keys) == sorted(s["__key__"] for s in samples) and len(keys) == 6
    got = next(iter(stream))
    assert np.allclose(got["mix"], samples[0]["mix"], atol=1e-6) and got["json"]["key"] == samples[0]["__key__"]
    held = [s["__key__"] for s in ShardStream([tmp_path / "s"], holdout=3, only_holdout=True)]
    rest = [s["__key__"] for s in ShardStream([tmp_path / "s"], holdout=3)]
    assert sorted(held + rest) == sorted(keys) and not set(held) & set(rest)


def test_cosine_schedule_anneals_over_the_binding_budget() -> None:
    from models.separator.train import cosine_lr

    cfg = SeparatorConfig(lr=1e-3, min_lr=1e-5, time_budget_s=100.0, max_epochs=10, steps_per_epoch=10,
                          lr_schedule="cosine")
    assert cosine_lr(cfg, 0, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(cfg, 0, 50.0) == pytest.approx((1e-3 + 1e-5) / 2)     # half the wall-clock budget
    assert cosine_lr(cfg, 50, 1.0) == pytest.approx((1e-3 + 1e-5) / 2)     # half the step budget binds first
    assert cosine_lr(cfg, 0, 500.0) == pytest.approx(1e-5)                   # past the budget: floor
    lrs = [cosine_lr(cfg, s, 0.0) for s in range(0, 101, 10)]
    assert lrs == sorted(lrs, reverse=True)
    with pytest.raises(ValueError):
        SeparatorConfig(lr_schedule="linear")


def test_absent_queries_use_the_phrases_present_queries_use() -> None:
    """Silence augmentation must not teach the gate that a bare label means "absent" when shards ask in phrases."""
    from models.separator.data import sample_phrases

    s = next(iter(synthetic_samples(1, seconds=1.0, seed=3)))
    present = set(s["json"]["target_labels"] + s["json"]["residual_labels"])
    other = {"json": {"positive_labels": ["thunder"], "positive_text": "distant thunder rolling"}}
    multi = {"json": {"positive_labels": ["thunder", "hiss"], "positive_text": "distant thunder rolling, a hiss"}}
    phrases = sample_phrases([other, multi, other])
    assert phrases == {"thunder": ["distant thunder rolling"]}   # multi-class texts are not a class's phrase
    rng = np.random.default_rng(0)
    asked = {make_example(s, rng, 8000, {}, 1.0, ["thunder"], phrases).positive for _ in range(40)}
    assert asked == {"thunder", "distant thunder rolling"} and not asked & present


def test_parallel_backward_equals_full_batch_gradient() -> None:
    """Threaded batch slices (uneven: 5 items over 3 threads) must give the full-batch loss and gradient."""
    from concurrent.futures import ThreadPoolExecutor

    from models.separator.train import _step_loss, parallel_backward

    torch.manual_seed(0)
    cfg = SeparatorConfig(width=48, presence_gate=True)
    model = build_model("tiny", model_hparams(cfg, 32))
    params = [p for p in model.parameters() if p.requires_grad]
    enc = HashTextEncoder(dim=32)
    samples = list(synthetic_samples(5, seconds=1.0, seed=3, silent_every=2))
    batch = {"mix": torch.from_numpy(np.stack([s["mix"] for s in samples])),
             "target": torch.from_numpy(np.stack([s["target"] for s in samples])),
             "pos": enc.embed([s["json"]["positive_text"] for s in samples]),
             "neg": torch.zeros(5, 32), "silent": torch.tensor([bool(s["json"]["silent_target"]) for s in samples])}
    assert batch["silent"].any() and not batch["silent"].all()
    total, _ = _step_loss(model, batch, cfg, False)
    total.backward()
    full = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    with ThreadPoolExecutor(3) as pool:
        loss = parallel_backward(model, params, batch, cfg, False, pool, 3)
        again = [p.grad.clone() for p in params]
        parallel_backward(model, params, batch, cfg, False, pool, 3)
    assert abs(float(loss) - float(total)) < 1e-4
    for p, g_full, g_again in zip(params, full, again):
        assert torch.allclose(p.grad, g_full, rtol=1e-4, atol=1e-6)
        assert torch.equal(p.grad, g_again)  # fixed summation order: thread timing cannot change the result


def test_training_with_grad_threads_learns(tmp_path: Path) -> None:
    stream, val = _shards(tmp_path)
    cfg = SeparatorConfig(**SMALL, max_epochs=4, lr=3e-3, grad_threads=2)
    res = train_separator(cfg, [(stream, 1.0)], val, tmp_path / "run")
    assert res.steps == 12 and all(np.isfinite(h["val_loss"]) for h in res.history)
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
