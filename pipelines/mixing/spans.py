"""Span prompts: when the target sounds, as `[[start_s, end_s], ...]` (SAM Audio Sec. 4.2.3).

VAD follows pydub's `detect_nonsilent` (16-bit PCM, `silence_thresh` in dBFS, sliding `min_silence_len` window every
`seek_step` ms); sounding runs shorter than `min_sound_ms` are dropped. pydub walks the signal in Python, which costs
O(duration / seek_step) slices: at 10 ms steps that dominates mixing time, so `backend="numpy"` computes exactly the
same slices with prefix sums (tests check both backends agree sample for sample on random signals).
"""
from __future__ import annotations

import numpy as np

from pipelines.mixing.config import SpanConfig

MAX_AMPLITUDE_16 = 32768.0  # pydub's max_possible_amplitude for 2-byte samples


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 with rounding and clipping (the representation both backends measure)."""
    return np.clip(np.rint(np.asarray(audio, dtype=np.float64) * MAX_AMPLITUDE_16), -32768, 32767).astype(np.int16)


def _nonsilent_pydub(pcm: np.ndarray, sr: int, cfg: SpanConfig) -> list[list[int]]:
    from pydub import AudioSegment
    from pydub.silence import detect_nonsilent

    seg = AudioSegment(data=pcm.tobytes(), sample_width=2, frame_rate=sr, channels=1)
    return detect_nonsilent(seg, min_silence_len=cfg.min_silence_ms, silence_thresh=cfg.silence_thresh_dbfs,
                            seek_step=cfg.seek_step_ms)


def _pcm_squares(audio: np.ndarray) -> np.ndarray:
    """Squares of the int16 samples `to_pcm16` would produce, as float64 (exact integers), without the int16 trip.

    float32 input is scaled and rounded in float32 (scaling by 2**15 is exact, so the rounded values equal the
    float64 ones) and widened only for the square: half the memory traffic of working in float64 throughout.
    """
    a = np.asarray(audio)
    if a.dtype != np.float32:
        a = a.astype(np.float64, copy=False)
    q = np.multiply(a, a.dtype.type(MAX_AMPLITUDE_16))
    np.rint(q, out=q)
    np.minimum(q, 32767, out=q)
    np.maximum(q, -32768, out=q)
    return np.square(q, dtype=np.float64)


def _silent_starts_numpy(squares: np.ndarray, sr: int, seg_len: int, cfg: SpanConfig) -> list[int]:
    """Every slice start (ms) whose integer RMS is at or below the threshold, exactly as pydub computes it.

    Window sums come from `reduceat` over the sorted slice boundaries (exact: integer squares in float64), which
    avoids a full-length cumulative sum.
    """
    win, step = cfg.min_silence_ms, cfg.seek_step_ms
    last = seg_len - win
    starts = np.arange(0, last + 1, step, dtype=np.int64)
    if last % step:
        starts = np.append(starts, last)
    n = squares.shape[0]
    ends = np.minimum(starts + win, seg_len)
    f_start = (starts * (sr / 1000.0)).astype(np.int64)
    f_end = (ends * (sr / 1000.0)).astype(np.int64)
    expected = f_end - f_start
    q_start, q_end = np.minimum(f_start, n), np.minimum(f_end, n)
    bounds = np.unique(np.concatenate([[0], q_start, q_end]))
    bounds = bounds[bounds < n]
    positions = np.append(bounds, n)  # prefix sums are needed only at these sample positions
    prefix = np.concatenate([[0.0], np.cumsum(np.add.reduceat(squares, bounds))]) if n else np.zeros(1)
    total = prefix[np.searchsorted(positions, q_end)] - prefix[np.searchsorted(positions, q_start)]
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.where(expected > 0, np.floor(np.sqrt(total / np.maximum(expected, 1))), 0.0)
    thresh = 10.0 ** (cfg.silence_thresh_dbfs / 20.0) * MAX_AMPLITUDE_16
    return starts[rms <= thresh].tolist()


def _nonsilent_numpy(audio: np.ndarray, sr: int, cfg: SpanConfig) -> list[list[int]]:
    seg_len = round(1000 * (audio.shape[0] / sr))
    if seg_len < cfg.min_silence_ms:
        return [[0, seg_len]]
    starts = _silent_starts_numpy(_pcm_squares(audio), sr, seg_len, cfg)
    if not starts:
        return [[0, seg_len]]
    win, step = cfg.min_silence_ms, cfg.seek_step_ms
    silent: list[list[int]] = []
    prev = starts[0]
    current = prev
    for s in starts[1:]:
        if s != prev + step and s > prev + win:
            silent.append([current, prev + win])
            current = s
        prev = s
    silent.append([current, prev + win])
    if silent[0][0] == 0 and silent[0][1] == seg_len:
        return []
    out: list[list[int]] = []
    prev_end = 0
    end = 0
    for start, end in silent:
        out.append([prev_end, start])
        prev_end = end
    if end != seg_len:
        out.append([prev_end, seg_len])
    if out and out[0] == [0, 0]:
        out.pop(0)
    return out


def nonsilent_ms(audio: np.ndarray, sample_rate: int, cfg: SpanConfig | None = None) -> list[list[int]]:
    """pydub-style non-silent ranges in milliseconds (before the minimum-duration rule)."""
    cfg = cfg or SpanConfig()
    if cfg.backend == "pydub":
        return [list(r) for r in _nonsilent_pydub(to_pcm16(audio), sample_rate, cfg)]
    return _nonsilent_numpy(audio, sample_rate, cfg)


def detect_spans(audio: np.ndarray, sample_rate: int, cfg: SpanConfig | None = None) -> list[list[float]]:
    """Sounding intervals of `audio` in seconds, each at least `min_sound_ms` long; [] for silence."""
    cfg = cfg or SpanConfig()
    if audio.size == 0 or not np.any(audio):
        return []
    ranges = nonsilent_ms(audio, sample_rate, cfg)
    return [[start / 1000.0, end / 1000.0] for start, end in ranges if end - start >= cfg.min_sound_ms]


def silence_ratio(spans: list[list[float]], duration_s: float) -> float:
    """Fraction of the clip outside the spans (the SAM Audio silence filter reads this)."""
    if duration_s <= 0:
        return 1.0
    sounding = sum(end - start for start, end in spans)
    return float(max(0.0, 1.0 - sounding / duration_s))
