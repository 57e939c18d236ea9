"""Overlapping windows with linear crossfade, so scenes of any length are separated with bounded memory.

Each window's output is weighted by a trapezoid (linear ramps over the overlap on interior edges, flat elsewhere)
and the overlap-add is normalised by the summed weights, so a separator that returns its input unchanged
reconstructs the input exactly, and seams are crossfaded rather than cut.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def window_starts(num_frames: int, window: int, hop: int) -> list[int]:
    """Window start frames covering [0, num_frames); the last window is aligned to the end."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window, hop))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


def crossfade_weights(window: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    w = np.ones(window, dtype=np.float64)
    ramp = min(overlap, window // 2)
    if ramp > 0:
        r = (np.arange(ramp, dtype=np.float64) + 0.5) / ramp
        if not first:
            w[:ramp] = r
        if not last:
            w[-ramp:] = r[::-1]
    return w


def windowed(fn: Callable[[np.ndarray], np.ndarray], audio: np.ndarray, sample_rate: int, window_s: float, overlap_s: float) -> np.ndarray:
    """Apply `fn` ([B, W] -> [B, W]) to `audio` [B, T] in overlapping windows; returns float32 [B, T]."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"windowed expects [B, T] audio, got shape {audio.shape}")
    num_frames = audio.shape[1]
    window = max(1, int(round(window_s * sample_rate)))
    overlap = int(round(overlap_s * sample_rate))
    if num_frames <= window:
        return np.asarray(fn(audio), dtype=np.float32)
    hop = max(1, window - overlap)
    starts = window_starts(num_frames, window, hop)
    acc = np.zeros(audio.shape, dtype=np.float64)
    norm = np.zeros(num_frames, dtype=np.float64)
    for k, s in enumerate(starts):
        out = np.asarray(fn(audio[:, s:s + window]), dtype=np.float64)
        if out.shape != (audio.shape[0], window):
            raise ValueError(f"separator returned shape {out.shape} for a window of {(audio.shape[0], window)}")
        w = crossfade_weights(window, overlap, first=k == 0, last=k == len(starts) - 1)
        acc[:, s:s + window] += out * w
        norm[s:s + window] += w
    return (acc / np.maximum(norm, 1e-12)).astype(np.float32)
