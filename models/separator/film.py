"""FiLM conditioning (Perez et al.): the query modulates features as ``gamma(Q) * h + beta(Q)``.

ClearSep/CLAPSep condition every decoder level this way. The layer is initialised to the identity
(gamma = 1, beta = 0) so an untrained query path does not destroy the signal path at the start of training.
"""
from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """Feature-wise affine modulation of `[B, C, ...]` features by a query vector `[B, Q]`."""

    def __init__(self, query_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(query_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.channels = channels

    def forward(self, h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        if h.shape[1] != self.channels:
            raise ValueError(f"FiLM expects {self.channels} channels, got {h.shape[1]}")
        gamma, beta = self.proj(q).chunk(2, dim=-1)
        shape = (q.shape[0], self.channels) + (1,) * (h.dim() - 2)
        return h * (1.0 + gamma.view(shape)) + beta.view(shape)


def query_vector(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """ClearSep's `[Qp; Qn]` query (2 x D); a missing side is passed as zeros by the caller."""
    if positive.shape != negative.shape:
        raise ValueError(f"positive {tuple(positive.shape)} and negative {tuple(negative.shape)} query shapes differ")
    return torch.cat([positive, negative], dim=-1)
