"""Loudness and SNR as stemforge defines them.

Definition: the loudness of a signal is the RMS level in dBFS over its *active frames*:
  * split the signal into non-overlapping frames of `frame_s` seconds (a trailing partial frame counts);
  * a frame is active when its mean square is within `gate_db` of the loudest frame's mean square;
  * loudness = 10 log10(mean of the active frames' mean squares)   [dBFS, full scale = amplitude 1.0].
SNR between two components a and b is loudness(a) - loudness(b).

Why active frames with a *relative* gate: a 1-s dog bark placed in a 4-s mixture should have the same loudness as
the same bark on its own, so leading and trailing silence must not dilute it; and because the gate is relative,
loudness(g * x) = loudness(x) + 20 log10(g) exactly (the active set does not change with g), which makes the
realised SNR equal the sampled SNR to float precision after any common gain (the anti-clipping scale included).
"""
from __future__ import annotations

import numpy as np

SILENT_DB = -np.inf


def frame_powers(x: np.ndarray, sample_rate: int, frame_s: float = 0.05) -> np.ndarray:
    """Mean square of each frame (float64); the last partial frame is averaged over its own length."""
    x = np.asarray(x, dtype=np.float64)
    n = max(1, int(round(frame_s * sample_rate)))
    if x.size == 0:
        return np.zeros(0)
    full = (x.size // n) * n
    if full:
        frames = x[:full].reshape(-1, n)
        powers = np.einsum("ij,ij->i", frames, frames) / n  # no temporary squared copy
    else:
        powers = np.zeros(0)
    if full < x.size:
        powers = np.append(powers, np.mean(x[full:] ** 2))
    return powers


def loudness_db(x: np.ndarray, sample_rate: int, frame_s: float = 0.05, gate_db: float = 30.0) -> float:
    """Active-frame RMS level in dBFS; -inf for an all-zero signal."""
    powers = frame_powers(x, sample_rate, frame_s)
    if powers.size == 0:
        return SILENT_DB
    peak = float(powers.max())
    if peak <= 0.0:
        return SILENT_DB
    active = powers[powers >= peak * 10.0 ** (-gate_db / 10.0)]
    return float(10.0 * np.log10(active.mean()))


def gain_to_level(x: np.ndarray, level_db: float, sample_rate: int, frame_s: float = 0.05, gate_db: float = 30.0) -> float:
    """Linear gain that brings `x` to loudness `level_db`; raises on silence (no gain can do that)."""
    current = loudness_db(x, sample_rate, frame_s, gate_db)
    if not np.isfinite(current):
        raise ValueError("cannot set the level of an all-zero signal")
    return float(10.0 ** ((level_db - current) / 20.0))


def snr_db(a: np.ndarray, b: np.ndarray, sample_rate: int, frame_s: float = 0.05, gate_db: float = 30.0) -> float:
    """SNR of a over b under the definition above."""
    return loudness_db(a, sample_rate, frame_s, gate_db) - loudness_db(b, sample_rate, frame_s, gate_db)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


ACTIVE_RANGE_DB = 40.0  # a frame sounds when within this of the clip's loudest frame (wider than the level gate)


def active_span(x: np.ndarray, sample_rate: int, frame_s: float = 0.05, range_db: float = ACTIVE_RANGE_DB) -> tuple[float, float] | None:
    """(start_s, end_s) from the first to the last sounding frame; None for an all-zero signal.

    Why: ESC-50-style clips hold a 1-s event padded with digital silence to 5 s; an excerpt cut at random from the
    whole clip is often silent, so the importer records this span and mixing cuts excerpts inside it."""
    powers = frame_powers(x, sample_rate, frame_s)
    if powers.size == 0 or float(powers.max()) <= 0.0:
        return None
    on = np.flatnonzero(powers >= float(powers.max()) * 10.0 ** (-range_db / 10.0))
    n = max(1, int(round(frame_s * sample_rate)))
    total = np.asarray(x).shape[-1] / sample_rate
    return round(on[0] * n / sample_rate, 6), round(min(total, (on[-1] + 1) * n / sample_rate), 6)
