"""The mini CLAP trains on a tiny synthetic manifest, separates matching from non-matching pairs, round-trips
through its checkpoint, serves as the separator's text encoder, and rejects foreign or corrupt checkpoints."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from models.clap.base import ClapScorer, build_clap
from models.clap.checkpoint import CheckpointError
from models.clap.config import ClapConfig, MiniClapTrainConfig
from models.clap.mini import MiniClap
from models.clap.train_mini import load_clips, train_mini_clap, zero_shot_top1

_spec = importlib.util.spec_from_file_location("clap_fixtures", Path(__file__).with_name("clap_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]

TINY = dict(channels=[32, 32], text_hidden=64, embed_dim=512, crop_seconds=0.5, steps=80, batch_size=16, lr=3e-3, seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, MiniClap]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mini")
    manifest = fx.make_manifest(root, {"train": 5, "test": 3})
    clips, skipped = load_clips(manifest, 16000, ("train",))
    assert len(clips) == 15 and not skipped
    result = train_mini_clap(clips, fx.PHRASES, MiniClapTrainConfig(**TINY))
    ckpt = root / "mini.pt"
    result.model.save(ckpt, {"classes": result.classes})
    return manifest, ckpt, result.model


def test_trained_model_separates_classes(trained: tuple[Path, Path, MiniClap]) -> None:
    manifest, _, model = trained
    test, _ = load_clips(manifest, 16000, ("test",))
    assert zero_shot_top1(model, test, fx.PHRASES) >= 0.9
    with torch.inference_mode():
        classes = sorted(fx.PHRASES)
        t = model.encode_text([fx.PHRASES[c] for c in classes])
        a = model.encode_audio(torch.from_numpy(np.stack([c.audio for c in test])))
        sims = (a @ t.T).numpy()
    own = np.array([classes.index(c.label) for c in test])
    match = sims[np.arange(len(test)), own]
    mask = np.ones_like(sims, dtype=bool)
    mask[np.arange(len(test)), own] = False
    other = sims[mask]
    assert match.mean() > other.mean() + 0.3
    # the margin loss puts the filter thresholds between the populations: matching high, non-matching below 0
    assert (match > 0.3).mean() >= 0.8 and (other < 0.0).mean() >= 0.9


def test_checkpoint_roundtrip_and_scorer(trained: tuple[Path, Path, MiniClap]) -> None:
    manifest, ckpt, model = trained
    cfg = ClapConfig(backend="mini", checkpoint=str(ckpt), batch_size=4)
    scorer = build_clap(cfg)
    info = scorer.info()
    assert info["backend"] == "mini" and len(info["checkpoint_hash"]) == 16 and "mini_clap" in info["version"]
    test, _ = load_clips(manifest, 16000, ("test",))
    audio = np.stack([c.audio for c in test])
    emb = scorer.embed_audio(audio, 16000)  # batch_size 4 < 9 clips: exercises batching
    with torch.inference_mode():
        ref = model.encode_audio(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # any input rate: the same clip at 48 kHz scores like the 16 kHz original
    import torchaudio.functional as AF

    up = AF.resample(torch.from_numpy(audio), 16000, 48000).numpy()
    texts = [fx.PHRASES[c.label] for c in test]
    s16, s48 = scorer.score(texts, audio, 16000), scorer.score(texts, up, 48000)
    assert s16.shape == (len(test),) and np.abs(s16 - s48).max() < 0.05
    with pytest.raises(ValueError, match="3 texts but"):
        scorer.score(texts[:3], audio, 16000)
    with pytest.raises(ValueError, match="NaN"):
        scorer.embed_audio(np.full((1, 1600), np.nan, np.float32), 16000)


def test_batch_stage_adds_scores_and_identity(trained: tuple[Path, Path, MiniClap]) -> None:
    manifest, ckpt, _ = trained
    test, _ = load_clips(manifest, 16000, ("test",))
    hum = [c for c in test if c.label == "hum"]
    hiss = [c for c in test if c.label == "hiss"]
    batch = {"positive_text": [fx.PHRASES["hum"]] * 2 + [None], "sample_rate": [16000, 16000, 16000],
             "target": [hum[0].audio, hum[1].audio[:8000], hum[2].audio], "residual": [hiss[0].audio, hiss[1].audio[:8000], hiss[2].audio]}
    stage = ClapScorer(ClapConfig(backend="mini", checkpoint=str(ckpt)))
    out = stage(batch)
    assert out["clap_target"][:2].min() > out["clap_residual"][:2].max()
    assert np.isnan(out["clap_target"][2]) and np.isnan(out["clap_residual"][2])
    assert out["clap_backend"] == ["mini"] * 3 and len(set(out["clap_checkpoint_hash"])) == 1


def test_text_encoder_protocol(trained: tuple[Path, Path, MiniClap]) -> None:
    from models.text import TextEncoder

    _, ckpt, _ = trained
    enc = MiniClap.load(ckpt).text_encoder()
    assert isinstance(enc, TextEncoder) and enc.dim == 512
    emb = enc.embed(["a low hum", "a high whistle", "a never seen zebra phrase"])
    assert emb.shape == (3, 512) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])
    assert enc.embed([]).shape == (0, 512)


def test_training_is_seeded(tmp_path: Path) -> None:
    manifest = fx.make_manifest(tmp_path, {"train": 2}, seconds=0.6)
    clips, _ = load_clips(manifest, 16000, ("train",))
    cfg = MiniClapTrainConfig(**{**TINY, "steps": 3})
    a = train_mini_clap(clips, fx.PHRASES, cfg).model.state_dict()
    b = train_mini_clap(clips, fx.PHRASES, cfg).model.state_dict()
    c = train_mini_clap(clips, fx.PHRASES, cfg.model_copy(update={"seed": 4})).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_foreign_and_corrupt_checkpoints_fail_clearly(trained: tuple[Path, Path, MiniClap], tmp_path: Path) -> None:
    _, ckpt, _ = trained
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt: checkpoint not found"):
        MiniClap.load(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(ckpt.read_bytes()[: 5000])
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable"):
        MiniClap.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a stemforge checkpoint"):
        MiniClap.load(foreign)
    other = tmp_path / "judge.pt"
    torch.save({"format": "stemforge.judge", "version": 1}, other)
    with pytest.raises(CheckpointError, match="format is 'stemforge.judge', expected 'stemforge.mini_clap'"):
        build_clap(ClapConfig(backend="mini", checkpoint=str(other)))
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "stemforge.mini_clap", "obj": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match="unsafe.pt: not a readable"):
        MiniClap.load(unsafe)
    with pytest.raises(ValueError, match="clap.checkpoint is required"):
        build_clap(ClapConfig(backend="mini"))


def test_batch_sampler_match_matrix_follows_label_sets() -> None:
    from models.clap.train_mini import BatchSampler, Clip

    rng = np.random.default_rng(0)
    clips = [Clip(fx.synth(label, rng, 8000, 16000), label, f"{label}.flac") for label in fx.PHRASES for _ in range(2)]
    cfg = MiniClapTrainConfig(crop_seconds=0.25, mix_prob=0.5, silence_prob=0.2)
    sampler = BatchSampler(clips, fx.PHRASES, cfg, np.random.default_rng(1))
    items = [sampler._item() for _ in range(200)]
    texts, audio, match = sampler.sample(64)
    assert audio.shape == (64, 4000) and len(texts) == 64 and torch.isfinite(audio).all()
    # every kind of item occurs: single, mixture, label-free
    kinds = {len(al) for _, _, _, al in items}
    assert kinds == {0, 1, 2, 3}
    for _, a, tl, al in items:
        assert tl and (not al or tl <= al)  # a text always names labels present in its own audio (if any)
        assert np.abs(a).max() <= 1.0
    # match: 1 only for identical label sets, 0 for disjoint, -1 (ignored) for partial overlaps
    sampler2 = BatchSampler(clips, fx.PHRASES, cfg, np.random.default_rng(1))
    batch_items = [sampler2._item() for _ in range(64)]
    sampler3 = BatchSampler(clips, fx.PHRASES, cfg, np.random.default_rng(1))
    _, _, m = sampler3.sample(64)
    for i, (_, _, tl, _) in enumerate(batch_items):
        for j, (_, _, _, al) in enumerate(batch_items):
            expected = 1.0 if (al and tl == al) else (0.0 if not (tl & al) else -1.0)
            assert m[i, j] == expected
    assert (m == -1).any() and (m == 1).any() and (m == 0).any()
