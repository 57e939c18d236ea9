"""The `tiny` preset: size, conditioning, loss, training, checkpoints, deterministic draws, exact resume, windowed inference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.separator.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.separator.config import SeparatorConfig
from models.separator.data import ShardSource, make_example, query_texts
from models.separator.infer import Separator
from models.separator.presets import build_model, model_hparams
from models.separator.train import DrawPlan, separation_loss, train_separator
from models.text import HashTextEncoder, load_text_encoder
from separator_data import synthetic_samples, write_samples

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


def _shards(tmp: Path) -> tuple[ShardSource, list[dict]]:
    write_samples(tmp / "train", list(synthetic_samples(20, seconds=1.5, seed=1, silent_every=5)))
    return ShardSource([tmp / "train"]), list(synthetic_samples(6, seconds=1.5, seed=2, silent_every=3))


def test_training_learns_and_conditioning_matters(tmp_path: Path) -> None:
    stream, val = _shards(tmp_path)
    cfg = SeparatorConfig(**SMALL, max_steps=12, lr=3e-3)
    res = train_separator(cfg, [(stream, 1.0)], val, tmp_path / "run")
    assert res.epochs == 4 and res.steps == 12
    assert all(np.isfinite(h["val_loss"]) and np.isfinite(h["si_sdri"]) for h in res.history)
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    ck = load_checkpoint(res.best)
    assert ck.preset == "tiny" and ck.lineage["streams"][0]["shards"] and ck.metrics["epoch"] >= 1
    assert ck.code_version and ck.text_encoder.startswith("hash")
    sep = Separator.load(res.best, "cpu", gate_threshold=0.0)
    mix = val[0]["mix"][None]
    a = sep.separate(mix, 16000, ["whistle"], [None])
    b = sep.separate(mix, 16000, ["rumble"], [None])
    assert np.abs(a - b).max() > 1e-5  # the query changes the output


def _same_run(a, b) -> None:
    """Bit-identical weights and optimiser state, and the same loss curve (wall-clock fields aside)."""
    ca, cb = load_checkpoint(a.last), load_checkpoint(b.last)
    assert ca.state_dict.keys() == cb.state_dict.keys()
    for k in ca.state_dict:
        assert torch.equal(ca.state_dict[k], cb.state_dict[k]), k
    for sa, sb in zip(ca.train_state["optimizer"]["state"].values(), cb.train_state["optimizer"]["state"].values()):
        assert all(torch.equal(sa[n], sb[n]) for n in sa)
    strip = lambda hist: [{k: v for k, v in h.items() if k != "elapsed_s"} for h in hist]  # noqa: E731
    assert strip(a.history) == strip(b.history) and len(a.history) == a.epochs


def test_same_config_twice_gives_identical_state(tmp_path: Path) -> None:
    """The determinism statement (docs/perf/separator.md): on CPU the same config and data give bit-identical
    weights, optimiser state and loss history; the two-source mix and a partial last epoch are included."""
    stream, val = _shards(tmp_path)
    cfg = SeparatorConfig(**SMALL, max_steps=5, lr_schedule="cosine")
    streams = [(stream, 0.7), (val[:4], 0.3)]
    a = train_separator(cfg, streams, val, tmp_path / "a")
    b = train_separator(cfg, streams, val, tmp_path / "b")
    assert a.steps == b.steps == 5 and a.epochs == 2  # 3 + a partial epoch of 2
    _same_run(a, b)


def test_decoding_workers_change_nothing(tmp_path: Path) -> None:
    """`workers: 2` decodes batches ahead in forkserver processes (not fork: see models/separator/train.py): the same
    batches in the same order, so the same weights as decoding inline."""
    stream, val = _shards(tmp_path)
    inline = train_separator(SeparatorConfig(**SMALL, max_steps=4), [(stream, 1.0)], val, tmp_path / "a")
    ahead = train_separator(SeparatorConfig(**SMALL, max_steps=4, workers=2), [(stream, 1.0)], val, tmp_path / "b")
    _same_run(inline, ahead)


def test_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    stream, val = _shards(tmp_path)
    straight = train_separator(SeparatorConfig(**SMALL, max_steps=6), [(stream, 1.0)], val, tmp_path / "a")
    train_separator(SeparatorConfig(**SMALL, max_steps=3), [(stream, 1.0)], val, tmp_path / "b")
    resumed = train_separator(SeparatorConfig(**SMALL, max_steps=6), [(stream, 1.0)], val, tmp_path / "b")
    assert resumed.steps == straight.steps == 6
    _same_run(straight, resumed)


def test_draw_plan_is_seekable_and_covers_each_sample_once_per_pass() -> None:
    plan = DrawPlan([10], [1.0], seed=3, global_batch=4)
    draws = [d for s in range(5) for d in plan.step(s)]
    assert [g for _, _, g in draws] == list(range(20))
    first, second = [i for _, i, _ in draws[:10]], [i for _, i, _ in draws[10:20]]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second  # a fresh order per pass
    # seeking: a fresh plan asked for step 4 directly gives what the sequential one gave
    assert DrawPlan([10], [1.0], seed=3, global_batch=4).step(4) == draws[16:20]
    # two sources by weight: same draws for the same seed, another seed differs, shares follow the weights
    two = DrawPlan([7, 1000], [0.25, 0.75], seed=0, global_batch=8)
    picks = [k for s in range(200) for k, _, _ in two.step(s)]
    assert abs(picks.count(0) / len(picks) - 0.25) < 0.04
    assert DrawPlan([7, 1000], [0.25, 0.75], seed=0, global_batch=8).step(50) == two.step(50)
    assert DrawPlan([7, 1000], [0.25, 0.75], seed=1, global_batch=8).step(50) != two.step(50)
    with pytest.raises(ValueError, match="no samples"):
        DrawPlan([0], [1.0], seed=0, global_batch=2)


def test_rank_shares_are_disjoint_and_rebuild_the_global_batch(tmp_path: Path) -> None:
    """Rank r of W takes slots [rB/W, (r+1)B/W): together the ranks build exactly the single-process batch, and
    a DataLoader with worker processes builds the same items as the inline path."""
    from models.separator.train import RankBatches

    stream, val = _shards(tmp_path)
    cfg = SeparatorConfig(**SMALL, max_steps=4)
    plan = DrawPlan([len(stream)], [1.0], cfg.seed, cfg.batch_size)
    whole = RankBatches([stream], plan, 0, 1, cfg, ["whistle", "hiss"], {})
    halves = [RankBatches([stream], plan, r, 2, cfg, ["whistle", "hiss"], {}) for r in (0, 1)]
    for step in (0, 3):
        ref = whole[step]
        parts = [h[step] for h in halves]
        assert np.array_equal(np.concatenate([p["mix"] for p in parts]), ref["mix"])
        assert sum((p["pos"] for p in parts), []) == ref["pos"]
    loader = torch.utils.data.DataLoader(whole, batch_size=None, sampler=range(1, 4), num_workers=2,
                                         collate_fn=lambda x: x)
    for step, item in zip(range(1, 4), loader):
        assert np.array_equal(item["target"], whole[step]["target"]) and item["neg"] == whole[step]["neg"]


def test_finetune_init_and_checkpoint_validation(tmp_path: Path) -> None:
    stream, val = _shards(tmp_path)
    base = train_separator(SeparatorConfig(**SMALL, max_steps=3), [(stream, 1.0)], val, tmp_path / "base")
    tuned = train_separator(SeparatorConfig(**SMALL, max_steps=3), [(stream, 1.0)], val, tmp_path / "ft", init=base.best)
    assert load_checkpoint(tuned.best).lineage["init"]["path"] == str(base.best)
    with pytest.raises(ValueError, match="preset"):
        train_separator(SeparatorConfig(**{**SMALL, "max_steps": 3}, preset="clapsep"), [(stream, 1.0)], val,
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


def test_shard_source_reads_by_sample_number_and_holds_out_by_key(tmp_path: Path) -> None:
    samples = list(synthetic_samples(7, seconds=0.5, seed=7, silent_every=3))
    write_samples(tmp_path / "s", samples, max_count=3)  # three shards: random access crosses shard boundaries
    src = ShardSource([tmp_path / "s"])
    assert len(src) == 7 and [m["key"] for m in src.metas()] == [s["__key__"] for s in samples]
    for i in (5, 0, 3):
        got = src[i]
        assert got["__key__"] == samples[i]["__key__"] and np.allclose(got["mix"], samples[i]["mix"], atol=1e-6)
        assert np.allclose(got["target"], samples[i]["target"], atol=1e-6)
    assert not np.any(src[2]["target"]) and src[2]["json"]["silent_target"]
    half = ShardSource([tmp_path / "s"], sample_rate=8000)[1]
    assert half["mix"].shape == (4000,) and half["json"]["sample_rate"] == 16000
    held = [s["__key__"] for s in ShardSource([tmp_path / "s"], holdout=3, only_holdout=True)]
    rest = [s["__key__"] for s in ShardSource([tmp_path / "s"], holdout=3)]
    assert sorted(held + rest) == sorted(s["__key__"] for s in samples) and not set(held) & set(rest)
    with pytest.raises(ValueError, match="no shard index"):
        (tmp_path / "empty").mkdir()
        ShardSource([tmp_path / "empty"])


def test_cosine_schedule_anneals_over_the_step_budget() -> None:
    from models.separator.train import cosine_lr

    cfg = SeparatorConfig(lr=1e-3, min_lr=1e-5, max_steps=100, steps_per_epoch=10, lr_schedule="cosine")
    assert cosine_lr(cfg, 0) == pytest.approx(1e-3)
    assert cosine_lr(cfg, 50) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(cfg, 100) == pytest.approx(1e-5) and cosine_lr(cfg, 500) == pytest.approx(1e-5)
    lrs = [cosine_lr(cfg, s) for s in range(0, 101, 10)]
    assert lrs == sorted(lrs, reverse=True)
    warm = cfg.model_copy(update={"warmup_steps": 10})
    assert cosine_lr(warm, 0) == pytest.approx(cosine_lr(cfg, 0) / 10)  # a fine-tune's first step: a tenth of the peak
    assert [cosine_lr(warm, s) for s in range(10)] == sorted(cosine_lr(warm, s) for s in range(10))
    assert cosine_lr(warm, 9) == pytest.approx(cosine_lr(cfg, 9))  # warm-up ends on the cosine curve
    assert all(cosine_lr(warm, s) == cosine_lr(cfg, s) for s in range(10, 101))
    with pytest.raises(ValueError, match="needs lr_schedule: cosine"):
        SeparatorConfig(warmup_steps=10, lr_schedule="plateau")
    with pytest.raises(ValueError):
        SeparatorConfig(lr_schedule="linear")
    with pytest.raises(ValueError):
        SeparatorConfig(time_budget_s=10.0)  # wall-clock budgets are gone: steps only


def test_absent_queries_use_the_forms_present_queries_use() -> None:
    """Silence augmentation must not teach the gate that one wording means "absent": absent classes are asked in the
    same written forms present ones are (the stored phrase, bare label variants, templates, the AudioSet name)."""
    from models.labels import training_forms
    from models.separator.data import sample_phrases

    s = next(iter(synthetic_samples(1, seconds=1.0, seed=3)))
    present = set(s["json"]["target_labels"] + s["json"]["residual_labels"])
    other = {"json": {"positive_labels": ["thunder"], "positive_text": "distant thunder rolling"}}
    multi = {"json": {"positive_labels": ["thunder", "hiss"], "positive_text": "distant thunder rolling, a hiss"}}
    phrases = sample_phrases([other, multi, other])
    assert phrases == {"thunder": ["distant thunder rolling"]}   # multi-class texts are not a class's phrase
    rng = np.random.default_rng(0)
    # the stored-text path (query_forms off) asks as before: the label or the shards' phrase
    old = {make_example(s, rng, 8000, {}, 1.0, ["thunder"], phrases, query_forms=False).positive for _ in range(40)}
    assert old == {"thunder", "distant thunder rolling"} and not old & present
    absent = [make_example(s, rng, 8000, {}, 1.0, ["thunder"], phrases) for _ in range(300)]
    assert all(e.silent and not np.any(e.target) for e in absent)
    here = {"__key__": "t", "mix": s["mix"], "target": s["mix"],
            "json": {"positive_labels": ["thunder"], "positive_text": "thunder rumbling", "query_mode": "pos",
                     "target_labels": ["thunder"]}}
    asked_present = {make_example(here, rng, 8000, {}, 0.0, [], phrases).positive for _ in range(300)}
    allowed = training_forms("thunder", phrases["thunder"])
    asked_absent = {e.positive for e in absent}
    assert asked_absent <= allowed and asked_present <= allowed
    assert len(asked_absent) >= 12 and len(asked_present) >= 12
    assert {"distant thunder rolling", "thunder", "THUNDER", "Thunder"} <= asked_absent & asked_present


def test_end_checkpoint_is_the_last_weights_without_optimiser_state(tmp_path: Path) -> None:
    """`end.pt` (engine.retrain_checkpoint: end) holds the weights at the end of the budget, loadable like best.pt;
    best.pt may be an earlier step."""
    from models.separator.train import end_checkpoint

    stream, val = _shards(tmp_path)
    res = train_separator(SeparatorConfig(**SMALL, max_steps=6, lr_schedule="cosine"), [(stream, 1.0)], val, tmp_path / "r")
    end = end_checkpoint(tmp_path / "r")
    last, ck = load_checkpoint(res.last), load_checkpoint(end)
    assert ck.train_state is None and last.train_state["step"] == 6
    assert all(torch.equal(ck.state_dict[k], last.state_dict[k]) for k in last.state_dict)
    assert end.stat().st_size < res.last.stat().st_size  # no optimiser moments
    Separator.load(end, "cpu")
