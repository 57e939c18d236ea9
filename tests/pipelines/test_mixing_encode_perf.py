"""Speed-ups of the mixing path must not change what is written: same samples, same bytes, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.mixing.allocator import tune_allocator
from pipelines.mixing.config import MixingConfig
from pipelines.mixing.spans import _pcm_squares, to_pcm16
from storage.audio import decode_audio, encode_audio


def _signal(n: int = 16000, seed: int = 0, scale: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def test_compression_levels_are_lossless_and_trade_bytes():
    x = np.sin(np.linspace(0, 400 * np.pi, 16000)).astype(np.float32) * 0.5 + _signal(scale=1e-3)
    ref, _ = decode_audio(encode_audio(x, 16000, "FLAC"))
    sizes = {}
    for level in (0.0, 0.5, 1.0):
        data = encode_audio(x, 16000, "FLAC", compression_level=level)
        y, sr = decode_audio(data)
        assert sr == 16000 and np.array_equal(y, ref)
        sizes[level] = len(data)
    assert sizes[1.0] <= sizes[0.0]
    assert encode_audio(x, 16000, "FLAC", compression_level=None) == encode_audio(x, 16000, "FLAC")


def test_compression_level_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="compression_level"):
        encode_audio(_signal(), 16000, "FLAC", compression_level=1.5)
    with pytest.raises(ValueError):
        MixingConfig(flac_compression_level=-0.1)


def test_in_range_audio_skips_the_clip_copy_with_identical_bytes_and_out_of_range_still_clips():
    x = _signal(scale=0.2)
    assert np.abs(x).max() < 1.0
    assert encode_audio(x, 16000, "FLAC") == encode_audio(np.clip(x, -1.0, 1.0), 16000, "FLAC")
    loud = x * 20.0
    y, _ = decode_audio(encode_audio(loud, 16000, "FLAC"))
    assert y.max() <= 1.0 and y.min() >= -1.0
    assert encode_audio(loud, 16000, "FLAC") == encode_audio(np.clip(loud, -1.0, 1.0), 16000, "FLAC")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pcm_squares_match_the_int16_reference(dtype):
    x = _signal(50000, seed=3, scale=0.6).astype(dtype)
    x[:6] = [0.5 / 32768, 1.5 / 32768, -0.5 / 32768, 1.0, -1.0, 2.5]  # ties round to even; out of range clips
    ref = to_pcm16(x).astype(np.float64) ** 2
    got = _pcm_squares(x)
    assert got.dtype == np.float64 and np.array_equal(got, ref)


def test_tune_allocator_is_idempotent_and_validates():
    first = tune_allocator()
    assert tune_allocator() == first
    with pytest.raises(ValueError):
        tune_allocator(mmap_threshold_mb=0)


def test_threaded_stem_encoding_gives_the_same_sample(tmp_path):
    from pipelines.mixing.job import MixStage
    from pipelines.mixing.render import render, to_shard_sample
    from toy_sources import write_toy_sources
    from storage.audio import AudioConfig

    manifest = write_toy_sources(tmp_path / "toy", per_class=2, seconds=2.0)
    stage = MixStage(MixingConfig(duration_s=2.0, max_uses_per_epoch=0), 5, manifest, audio_cfg=AudioConfig(sample_rate=8000))
    stage.setup()
    for i in range(4):
        t = render(stage.planner.spec(i), stage.cache, stage.cfg.spans)
        serial = to_shard_sample(t, "h")
        threaded = to_shard_sample(t, "h", encode_threads=3)
        assert serial.keys() == threaded.keys()
        assert all(serial[k] == threaded[k] for k in serial)
    with pytest.raises(ValueError, match="encode_threads"):
        to_shard_sample(t, "h", encode_threads=0)


def test_stage_threads_config_compression_level_through_to_the_flac(tmp_path):
    from pipelines.mixing.job import MixStage
    from toy_sources import write_toy_sources
    from storage.audio import AudioConfig

    manifest = write_toy_sources(tmp_path / "toy", per_class=2, seconds=2.0)
    batch = {"index": np.arange(3)}
    outs = {}
    for level in (None, 0.0):
        cfg = MixingConfig(duration_s=2.0, max_uses_per_epoch=0, flac_compression_level=level)
        outs[level] = MixStage(cfg, 5, manifest, audio_cfg=AudioConfig(sample_rate=8000))(batch)["sample"]
    differs = False
    for a, b in zip(outs[None], outs[0.0]):
        for member in ("mix.flac", "target.flac", "residual.flac"):
            if member in a:
                assert np.array_equal(decode_audio(a[member])[0], decode_audio(b[member])[0])
                differs |= a[member] != b[member]
    assert differs  # level 0 is a different (fixed-predictor) encoding of the same samples
