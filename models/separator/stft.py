"""STFT front end shared by the presets: magnitude for the network, phase kept for resynthesis.

The separator predicts a real mask on the mixture magnitude and reuses the mixture phase (ClearSep / CLAPSep), so
the front end returns the complex spectrogram and the inverse takes a masked complex spectrogram back to samples
with the exact input length.
"""
from __future__ import annotations

import torch
from torch import nn


class STFT(nn.Module):
    """Hann-windowed STFT/iSTFT pair (torch.stft, centred); `hop <= n_fft/2` keeps the overlap-add invertible."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        if hop > n_fft // 2:
            raise ValueError(f"STFT hop {hop} must be at most n_fft/2 = {n_fft // 2} for a Hann window to invert")
        self.n_fft = n_fft
        self.hop = hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """`[B, T]` float -> complex `[B, F, N]` (computed in float32 even under autocast)."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        with torch.autocast(device_type=spec.device.type, enabled=False):
            return torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=length)
