"""PROXY ratings: judge targets derived from ground truth when no human ratings exist.

This is a stand-in for SAJ's human ratings, not a reproduction of them. We take a synthetic tuple (target and the
other sources known exactly), build an "output" by degrading the target on purpose, and compute four 1-5 ratings
from what was actually done to the signal (measured on the components, so the mapping is deterministic):

| degradation (sampled independently)          | measured quantity                                     | axis          |
| -------------------------------------------- | ----------------------------------------------------- | ------------- |
| missing target segments (0-90 % of time)     | kept = energy of target kept / target energy          | recall        |
| leakage of the residual (-35 .. +6 dB re tgt) | L = 10 log10(E_leak / E_target_part) dB               | precision     |
| spectral distortion (random EQ / low-pass)    | D = log-spectral distance of target part vs target, dB| faithfulness  |
| gain error (-12 .. +12 dB)                    | G = abs(gain) dB                                      | faithfulness  |
| wrong source (another source of the mixture)  | kept = 0, L = +inf                                    | all low       |

Mapping (each clipped to [1, 5]):
- recall       = 1 + 4 * kept ** 1.5
- precision    = 1 + 4 * (L_hi - L) / (L_hi - L_lo) with L_lo = -30 dB (clean), L_hi = +5 dB (leak dominates)
- faithfulness = 5 - D / 2.5 - G / 3            (D in dB, G in dB; 10 dB LSD or 12 dB gain = floor)
  and faithfulness = 1 when nothing of the target is left (kept < 0.05)
- overall      = 0.6 * (0.35 recall + 0.35 precision + 0.30 faithfulness) + 0.4 * min(recall, precision, faithfulness)
  (the min term encodes that one severe flaw ruins a separation, as SAJ's raters do).
Each degradation is on with probability ~0.5 and its strength is uniform over its range, and 10 % of outputs are
the clean target and 12 % a wrong source, so every axis covers the whole 1-5 scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from models.judge.tuples import Tuple

AXES = ("overall", "recall", "precision", "faithfulness")
L_LO, L_HI = -30.0, 5.0


@dataclass
class Degraded:
    output: np.ndarray
    ratings: dict[str, float]
    params: dict[str, float]


def _energy(x: np.ndarray) -> float:
    return float(np.sum(np.square(x, dtype=np.float64)))


def log_spectral_distance(ref: np.ndarray, est: np.ndarray, n_fft: int = 512) -> float:
    """Energy-weighted log-spectral distance (dB) over frames where the reference sounds; gain is removed first
    so LSD measures shape only (gain is its own term)."""
    _, _, R = signal.stft(ref, nperseg=n_fft)
    _, _, E = signal.stft(est, nperseg=n_fft)
    pr, pe = np.abs(R) ** 2 + 1e-10, np.abs(E) ** 2 + 1e-10
    frame_e = pr.sum(axis=0)
    active = frame_e > frame_e.max() * 1e-3
    if not active.any():
        return 0.0
    g = pr[:, active].sum() / pe[:, active].sum()
    d = 10 * np.log10(pr[:, active]) - 10 * np.log10(pe[:, active] * g)
    w = pr[:, active] / pr[:, active].sum(axis=0, keepdims=True)
    return float(np.mean(np.sqrt(np.sum(w * d ** 2, axis=0))))


def _segment_mask(n: int, frac: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """1 where kept; removes ~`frac` of the time in 1-4 segments with 10 ms ramps."""
    mask = np.ones(n, dtype=np.float32)
    if frac <= 0:
        return mask
    segs = int(rng.integers(1, 5))
    total = int(frac * n)
    for length in np.diff(np.sort(np.r_[0, rng.integers(0, total + 1, size=segs - 1), total])):
        if length <= 0:
            continue
        start = int(rng.integers(0, max(1, n - length)))
        mask[start:start + length] = 0.0
    ramp = max(1, int(0.01 * sr))
    return np.convolve(mask, np.ones(ramp) / ramp, mode="same").astype(np.float32)


def _random_filter(x: np.ndarray, strength: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Low-pass or band-shaping EQ whose severity grows with `strength` in [0, 1]."""
    if rng.random() < 0.5:
        cutoff = float(np.exp(np.log(sr * 0.45) * (1 - strength) + np.log(200.0) * strength))
        sos = signal.butter(4, min(cutoff, sr * 0.45), btype="low", fs=sr, output="sos")
        return signal.sosfilt(sos, x).astype(np.float32)
    lo = float(rng.uniform(150, 1500))
    sos = signal.butter(2, [lo, min(lo * (6 - 4.5 * strength), sr * 0.45)], btype="band", fs=sr, output="sos")
    band = signal.sosfilt(sos, x)
    return (x * (1 - strength) + band * strength * 3.0).astype(np.float32)


def ratings_from_measures(kept: float, leak_db: float, lsd_db: float, gain_db: float) -> dict[str, float]:
    """The documented mapping from measured quantities to the four 1-5 axes."""
    recall = 1 + 4 * float(np.clip(kept, 0, 1)) ** 1.5
    precision = float(np.clip(1 + 4 * (L_HI - leak_db) / (L_HI - L_LO), 1, 5))
    faith = float(np.clip(5 - lsd_db / 2.5 - abs(gain_db) / 3.0, 1, 5)) if kept >= 0.05 else 1.0
    mean = 0.35 * recall + 0.35 * precision + 0.30 * faith
    overall = 0.6 * mean + 0.4 * min(recall, precision, faith)
    return {"overall": overall, "recall": recall, "precision": precision, "faithfulness": faith}


def degrade(t: Tuple, rng: np.random.Generator, sr: int) -> Degraded:
    """Sample an output for tuple `t` and its proxy ratings (see module docstring)."""
    n = len(t.target)
    u = rng.random()
    if u < 0.12 and t.others:  # wrong source: another source of the same mixture (plus maybe a little target)
        other = t.others[int(rng.integers(len(t.others)))]
        bleed = float(rng.uniform(0, 0.15)) if rng.random() < 0.5 else 0.0
        out = other + bleed * t.target
        kept = bleed ** 2
        leak_db = 10 * np.log10(_energy(other) / max(_energy(bleed * t.target), 1e-12))
        r = ratings_from_measures(kept, float(min(leak_db, 60.0)), 0.0, 0.0)
        return Degraded(out.astype(np.float32), r, {"wrong_source": 1.0, "bleed": bleed})
    perfect = u < 0.22
    frac = 0.0 if perfect or rng.random() < 0.5 else float(rng.uniform(0.05, 0.9))
    strength = 0.0 if perfect or rng.random() < 0.55 else float(rng.uniform(0.1, 1.0))
    gain_db = 0.0 if perfect or rng.random() < 0.55 else float(rng.uniform(-12, 12))
    leak_rel = None if perfect or rng.random() < 0.4 or not t.others else float(rng.uniform(-35, 6))

    mask = _segment_mask(n, frac, rng, sr)
    part = t.target * mask
    kept = _energy(part) / max(_energy(t.target), 1e-12)
    shaped = _random_filter(part, strength, rng, sr) if strength > 0 else part
    lsd = log_spectral_distance(part, shaped) if strength > 0 and kept > 1e-3 else 0.0
    # filtering also changes level: fold that into the target part so the gain term is exactly `gain_db`
    shaped = shaped * np.float32(np.sqrt(max(_energy(part), 1e-12) / max(_energy(shaped), 1e-12)))
    tgt_part = shaped * np.float32(10 ** (gain_db / 20))
    out = tgt_part.copy()
    leak_db = -60.0
    if leak_rel is not None:
        res = t.residual
        e_t, e_r = _energy(tgt_part), _energy(res)
        if e_r > 1e-10 and e_t > 1e-10:
            a = np.sqrt(e_t / e_r * 10 ** (leak_rel / 10))
            out = out + np.float32(a) * res
            leak_db = leak_rel
        elif e_r > 1e-10:  # nothing of the target left: any leak dominates
            out = out + np.float32(10 ** (leak_rel / 20)) * res
            leak_db = 60.0
    r = ratings_from_measures(kept, leak_db, lsd, gain_db)
    return Degraded(out.astype(np.float32), r, {"missing_frac": frac, "distortion": strength, "gain_db": gain_db,
                                                 "leak_db": leak_db, "lsd_db": lsd, "kept": kept})
