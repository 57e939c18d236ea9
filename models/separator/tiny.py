"""`tiny`: a CPU-friendly query-conditioned mask separator (about 1.3 M parameters at the default width).

Design (ClearSep's mask-on-magnitude recipe, shrunk): log-magnitude frames -> two 1-D convolutions over time
with frequency as channels -> a bidirectional GRU -> a sigmoid mask per bin, FiLM-conditioned by the projected
`[Qp; Qn]` query after every block. A small presence head reads the pooled trunk features and the query and predicts
whether the queried sound is in the mixture at all; inference outputs silence where it says "absent". The gate is the
remedy for absent-class queries: a mask network alone leaks a few percent of the mixture (Silence-SDR ~12 dB),
while a gate that says "absent" silences the whole clip (see docs/perf/separator.md).
"""
from __future__ import annotations

import torch
from torch import nn

from models.separator.base import SeparatorOutput
from models.separator.film import FiLM, query_vector
from models.separator.stft import STFT


class TinySeparator(nn.Module):
    preset = "tiny"

    def __init__(self, query_dim: int, sample_rate: int = 16000, n_fft: int = 512, hop: int = 256, width: int = 256,
                 presence_gate: bool = True, gru_stride: int = 1, gru_layers: int = 1):
        super().__init__()
        self.hparams = dict(query_dim=query_dim, sample_rate=sample_rate, n_fft=n_fft, hop=hop, width=width,
                            presence_gate=presence_gate, gru_stride=gru_stride, gru_layers=gru_layers)
        self.gru_stride = gru_stride
        self.sample_rate = sample_rate
        self.stft = STFT(n_fft, hop)
        bins = self.stft.bins
        self.query = nn.Sequential(nn.Linear(2 * query_dim, width), nn.GELU(), nn.Linear(width, width))
        self.inp = nn.Conv1d(bins, width, 3, padding=1)
        self.conv = nn.Conv1d(width, width, 3, padding=2, dilation=2)
        self.gru = nn.GRU(width, width // 2, num_layers=gru_layers, batch_first=True, bidirectional=True)
        self.films = nn.ModuleList([FiLM(width, width) for _ in range(3)])
        self.norms = nn.ModuleList([nn.GroupNorm(1, width) for _ in range(3)])
        self.out = nn.Conv1d(width, bins, 1)
        self.gate = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 1)) if presence_gate else None

    def forward(self, mix: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> SeparatorOutput:
        spec = self.stft(mix)                                        # [B, F, N] complex
        # STFT is linear: the spectrum of the RMS-normalised mixture is spec / rms (one FFT instead of two)
        scale = mix.float().pow(2).mean(-1).sqrt().add(1e-5)[:, None, None]
        feats = torch.log(spec.abs() / scale + 1e-3)
        q = self.query(query_vector(positive, negative))             # [B, W]
        act = nn.functional.gelu
        h = self.films[0](self.norms[0](act(self.inp(feats))), q)
        h = h + self.films[1](self.norms[1](act(self.conv(h))), q)
        g = self._recurrent(h)
        h = h + self.films[2](self.norms[2](g), q)
        mask = torch.sigmoid(self.out(h)).float()                    # [B, F, N]
        gate_logit = None
        if self.gate is not None:
            gate_logit = self.gate(torch.cat([h.mean(-1), q], dim=-1)).squeeze(-1).float()
        est = self.stft.inverse(spec * mask, mix.shape[-1])
        return SeparatorOutput(estimate=est, gate_logit=gate_logit, mask=mask)

    def _recurrent(self, h: torch.Tensor) -> torch.Tensor:
        """BiGRU over time, optionally on `gru_stride`-pooled frames. Why: on CPU the GRU's per-frame steps are
        about half of a training step; pooling frames 2:1 halves that, and the full-rate conv features still reach
        the mask through the residual path."""
        n = h.shape[-1]
        if self.gru_stride > 1:
            h = nn.functional.avg_pool1d(h, self.gru_stride, ceil_mode=True)
        g, _ = self.gru(h.transpose(1, 2))
        g = g.transpose(1, 2)
        if self.gru_stride > 1:
            g = g.repeat_interleave(self.gru_stride, dim=-1)[..., :n]
        return g
