"""PROXY production-complexity (PC) estimator trained on synthetic mixtures.

audiobox-aesthetics' PC axis rates how many components a recording stacks up (1 = a single sound, 10 = dense
production). SAM Audio keeps a target only if PC < 2.5, i.e. "close to a single clean source". Without the real
model we train a small regressor on mixtures whose composition we know, with the target

    PC_proxy = 1.5 + 1.2 * (n_active_sources - 1) + 1.5 * b,   clipped to [1, 10]

where b in [0, 1] is the background level (0 = none, rising linearly from -30 dB to 0 dB relative to the
foreground; the background is slowly modulated coloured noise, i.e. ambience/room tone). A single clean source
scores 1.5 (< 2.5), one added source already 2.7 (> 2.5), so the paper's threshold keeps its meaning. It is a
proxy: it counts sources and background, it does not judge mixing or artistic complexity as the real model does.

The network is level-invariant (log-mel minus its clip mean): PC must not change with playback gain.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.judge.features import LogMel
from models.judge.tuples import SourcePool, rms

PC_SINGLE, PC_PER_SOURCE, PC_BACKGROUND = 1.5, 1.2, 1.5
BG_FLOOR_DB = -30.0


def proxy_pc(n_sources: int, background_db: float | None) -> float:
    """The documented proxy target (see module docstring)."""
    b = 0.0 if background_db is None else float(np.clip((background_db - BG_FLOOR_DB) / -BG_FLOOR_DB, 0.0, 1.0))
    return float(np.clip(PC_SINGLE + PC_PER_SOURCE * (max(n_sources, 1) - 1) + PC_BACKGROUND * b, 1.0, 10.0))


def background_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Slowly modulated coloured noise (spectral slope between pink and brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    slope = rng.uniform(0.5, 1.0)
    spec = spec / np.maximum(f, 20.0) ** slope
    x = np.fft.irfft(spec, n)
    t = np.arange(n) / sr
    x *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    return (x / rms(x)).astype(np.float32)


def make_pc_example(pool: SourcePool, rng: np.random.Generator, n: int, max_sources: int, background_prob: float,
                    snr_db: tuple[float, float]) -> tuple[np.ndarray, float, int, float | None]:
    """-> (audio, proxy PC, number of sources, background dB or None)."""
    k = int(rng.integers(1, max_sources + 1))
    srcs, _ = pool.draw_sources(rng, k, n)
    fg = srcs[0] + sum(s * np.float32(10 ** (-rng.uniform(*snr_db) / 20)) for s in srcs[1:])
    bg_db = None
    if rng.random() < background_prob:
        bg_db = float(rng.uniform(-35.0, 0.0))
        fg = fg + background_noise(rng, n, pool.sample_rate) * np.float32(rms(fg) * 10 ** (bg_db / 20))
    fg = fg * np.float32(0.9 / max(float(np.abs(fg).max()), 1e-6) * rng.uniform(0.1, 1.0))
    return fg.astype(np.float32), proxy_pc(len(srcs), bg_db), len(srcs), bg_db


class MiniPC(nn.Module):
    """log-mel -> 3 conv blocks -> mean/std pooling over time -> MLP -> 1 + 9 * sigmoid."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, hop: int = 320, channels: int = 96):
        super().__init__()
        self.logmel = LogMel(sample_rate, n_mels, hop)
        c = channels
        self.net = nn.Sequential(
            nn.Conv1d(n_mels, c, 5, padding=2), nn.GELU(),
            nn.Conv1d(c, c, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv1d(c, c, 5, stride=2, padding=2), nn.GELU())
        self.head = nn.Sequential(nn.Linear(2 * c, c), nn.GELU(), nn.Linear(c, 1))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        m = self.logmel(wav)
        m = m - m.mean(dim=(1, 2), keepdim=True)
        h = self.net(m)
        z = torch.cat([h.mean(-1), h.std(-1)], dim=1)
        return 1 + 9 * torch.sigmoid(self.head(z).squeeze(-1))
