"""What every separator preset returns, so training and inference never branch on the preset."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SeparatorOutput:
    """`estimate` [B, T] (already scaled by the presence gate when there is one); `gate_logit` [B] or None."""

    estimate: torch.Tensor
    gate_logit: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def rms_normalise(wav: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Scale each mixture to unit RMS before feature extraction: the mask is then independent of input gain."""
    return wav / (wav.pow(2).mean(-1, keepdim=True).sqrt() + eps)
