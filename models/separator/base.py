"""What every separator preset returns, so training and inference never branch on the preset."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SeparatorOutput:
    """`estimate` [B, T] is the mask output *without* the presence gate; `gate_logit` [B] (or None) is the
    separate presence prediction. Keeping them apart matters for training: if the gate multiplied the estimate,
    "output silence for everything" would be a cheap early minimum of the SDR + silence loss (silence scores 0 dB
    on present targets and the full silence bonus on absent ones); the gate is trained by BCE only."""

    estimate: torch.Tensor
    gate_logit: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def rms_normalise(wav: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Scale each mixture to unit RMS before feature extraction: the mask is then independent of input gain."""
    return wav / (wav.pow(2).mean(-1, keepdim=True).sqrt() + eps)


def apply_gate(out: SeparatorOutput, threshold: float) -> torch.Tensor:
    """The estimate with a hard presence decision: items whose gate probability is below `threshold` become
    exact silence; `threshold <= 0` or no gate returns the mask output unchanged."""
    if out.gate_logit is None or threshold <= 0:
        return out.estimate
    keep = (torch.sigmoid(out.gate_logit) >= threshold).to(out.estimate.dtype)
    return out.estimate * keep[:, None]
