"""The mini SAJ-style judge network.

SAJ fuses the temporal features of the input and the output with self-attention, brings the text in with
cross-attention, runs a transformer and reads linear heads (all four axes trained jointly). This is that design at
demo scale:
- one log-mel + conv front end shared by both streams; the output stream also sees its log-mel minus the
  mixture's (a soft "what was kept" map), the mixture stream sees zeros there; a stream embedding and sinusoidal
  positions tell the streams and frames apart;
- text: SAJ uses a pretrained text encoder; we need token-level features for cross-attention and must train offline
  in minutes, so words are hashed (crc32) into `text_vocab` buckets with a learned embedding. It learns the
  corpus's class vocabulary; unseen words share buckets at random (a documented limitation);
- `layers` x [self-attention over [mix; output] frames, cross-attention to text tokens, feed-forward];
- heads: overall/recall/precision/faithfulness as sigmoid * 4 + 1, and the proxy-task logit
  ("does the output contain the prompted target?").
"""
from __future__ import annotations

import math
import re
import zlib

import torch
from torch import nn

from models.judge.features import LogMel

AXES = ("overall", "recall", "precision", "faithfulness")


def hash_tokens(texts: list[str], vocab: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Word ids in [1, vocab) (0 = padding) and the padding mask `[N, max_tokens]` (True = pad)."""
    ids = torch.zeros(len(texts), max_tokens, dtype=torch.long)
    for i, text in enumerate(texts):
        words = re.findall(r"[a-z0-9']+", (text or "").lower())[:max_tokens] or ["<empty>"]
        for j, w in enumerate(words):
            ids[i, j] = 1 + zlib.crc32(w.encode("utf-8")) % (vocab - 1)
    return ids, ids == 0


def sinusoid(n: int, dim: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class FusionBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(self.n2(x), text, text, key_padding_mask=text_pad, need_weights=False)[0]
        return x + self.ff(self.n3(x))


class MiniJudge(nn.Module):
    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, hop: int = 320, dim: int = 64, heads: int = 4,
                 layers: int = 2, text_vocab: int = 4096, max_text_tokens: int = 16):
        super().__init__()
        self.text_vocab, self.max_text_tokens = text_vocab, max_text_tokens
        self.logmel = LogMel(sample_rate, n_mels, hop)
        self.front = nn.Sequential(
            nn.Conv1d(2 * n_mels, dim, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv1d(dim, dim, 3, padding=1), nn.GELU())
        self.stream = nn.Parameter(torch.zeros(2, dim))
        self.tok = nn.Embedding(text_vocab, dim, padding_idx=0)
        self.tok_pos = nn.Parameter(torch.zeros(max_text_tokens, dim))
        self.blocks = nn.ModuleList([FusionBlock(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.Linear(4 * dim, len(AXES))
        self.proxy = nn.Linear(4 * dim, 1)
        nn.init.normal_(self.stream, std=0.02)
        nn.init.normal_(self.tok_pos, std=0.02)

    def encode(self, mix: torch.Tensor, out: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """`mix`, `out`: `[B, T]` at the model rate, scaled by a common factor -> pooled `[B, 4*dim]`."""
        ref = mix.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-4)
        m, o = self.logmel(mix / ref), self.logmel(out / ref)  # [B, M, F]; level relative to the mixture
        fm = self.front(torch.cat([m, torch.zeros_like(m)], dim=1)).transpose(1, 2)
        fo = self.front(torch.cat([o, o - m], dim=1)).transpose(1, 2)
        f = fm.shape[1]
        pe = sinusoid(f, fm.shape[2], fm.device)
        x = torch.cat([fm + pe + self.stream[0], fo + pe + self.stream[1]], dim=1)
        ids, pad = hash_tokens(texts, self.text_vocab, self.max_text_tokens)
        ids, pad = ids.to(x.device), pad.to(x.device)
        text = self.tok(ids) + self.tok_pos[None]
        for blk in self.blocks:
            x = blk(x, text, pad)
        x = self.norm(x)
        xm, xo = x[:, :f], x[:, f:]
        return torch.cat([xm.mean(1), xo.mean(1), xo.amax(1), (xo - xm).abs().mean(1)], dim=1)

    def forward(self, mix: torch.Tensor, out: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (scores `[B, 4]` in [1, 5] ordered as AXES, proxy logit `[B]`)."""
        z = self.encode(mix, out, texts)
        return torch.sigmoid(self.heads(z)) * 4 + 1, self.proxy(z).squeeze(-1)
