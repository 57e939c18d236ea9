"""Span VAD: the numpy backend reproduces pydub's detect_nonsilent exactly, and spans follow the target."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.mixing.config import SpanConfig
from pipelines.mixing.spans import detect_spans, nonsilent_ms, silence_ratio

SR = 16000


def _bursty(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    x = np.zeros(n, dtype=np.float32)
    t = 0
    while t < n:
        length = int(rng.uniform(0.02, 0.6) * SR)
        gap = int(rng.uniform(0.01, 0.4) * SR)
        level = 10 ** (rng.uniform(-60, -10) / 20)
        x[t:t + length] = (level * rng.standard_normal(min(length, n - t))).astype(np.float32)
        t += length + gap
    return x


def _bursty_at(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    x = _bursty(rng, seconds)
    if sr == SR:
        return x
    return np.interp(np.arange(int(seconds * sr)) * SR / sr, np.arange(x.size), x).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sr", [SR, 22050, 44100])
def test_numpy_backend_matches_pydub(seed: int, sr: int) -> None:
    rng = np.random.default_rng(seed)
    x = _bursty_at(rng, float(rng.uniform(0.3, 3.0)), sr)
    for step, win in [(10, 100), (7, 250), (1, 30)]:
        np_cfg = SpanConfig(seek_step_ms=step, min_silence_ms=win, backend="numpy")
        pd_cfg = SpanConfig(seek_step_ms=step, min_silence_ms=win, backend="pydub")
        assert nonsilent_ms(x, sr, np_cfg) == nonsilent_ms(x, sr, pd_cfg)


def test_spans_locate_a_burst_and_drop_short_blips() -> None:
    x = np.zeros(3 * SR, dtype=np.float32)
    rng = np.random.default_rng(0)
    x[int(1.0 * SR):int(2.0 * SR)] = 0.1 * rng.standard_normal(SR).astype(np.float32)
    x[int(2.5 * SR):int(2.6 * SR)] = 0.1 * rng.standard_normal(int(0.1 * SR)).astype(np.float32)  # 100 ms blip
    spans = detect_spans(x, SR, SpanConfig(min_silence_ms=50))
    assert len(spans) == 1
    start, end = spans[0]
    assert abs(start - 1.0) <= 0.06 and abs(end - 2.0) <= 0.06
    assert detect_spans(np.zeros(SR, dtype=np.float32), SR) == []
    assert silence_ratio(spans, 3.0) == pytest.approx(1 - (end - start) / 3.0)


def test_quiet_signal_below_threshold_has_no_span() -> None:
    x = (10 ** (-50 / 20) * np.sin(np.linspace(0, 800 * np.pi, 2 * SR))).astype(np.float32)
    assert detect_spans(x, SR) == []
    assert detect_spans(x * 100, SR) == [[0.0, 2.0]]
