"""Log-mel frame features shared by the judge and the PC estimator.

Why log-mel with a fixed reference: the judge must see gain errors, so features are not normalised per clip;
callers scale a (mixture, output) pair by one common factor (the mixture's RMS) before this transform.
"""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from storage.audio import resample
from models.device import resolve_device  # noqa: F401  (scorers import it from here)


class LogMel(torch.nn.Module):
    """`[B, T]` waveform -> `[B, n_mels, frames]` log10 mel energy (floored at -8)."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, hop: int = 320, n_fft: int = 1024):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=2.0, center=True)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log10(self.mel(wav) + 1e-8)


def as_batch(audios: np.ndarray | list[np.ndarray], sr: int, target_sr: int, what: str = "audio") -> np.ndarray:
    """Validate a batch of mono clips, resample to `target_sr` and right-pad to a common length -> `[B, T]`."""
    if isinstance(audios, np.ndarray):
        if audios.ndim == 1:
            audios = audios[None]
        if audios.ndim != 2:
            raise ValueError(f"{what}: expected [B, T] mono float audio, got shape {audios.shape}")
        items = list(audios)
    else:
        items = [np.asarray(a) for a in audios]
    if not items:
        raise ValueError(f"{what}: empty batch")
    out = []
    for i, a in enumerate(items):
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"{what}[{i}]: expected non-empty mono [T] audio, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{what}[{i}]: contains NaN/Inf samples")
        out.append(resample(a, sr, target_sr))
    n = max(len(a) for a in out)
    batch = np.zeros((len(out), n), dtype=np.float32)
    for i, a in enumerate(out):
        batch[i, : len(a)] = a
    return batch


