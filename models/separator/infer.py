"""Inference: the batch API `Separator` used by later stages and the CLI, for inputs of any length.

Long inputs are cut into windows of the training segment length with `overlap` between neighbours, separated
in batches, and overlap-added with a raised-cosine crossfade whose weights are renormalised, so a constant mask
reproduces the input exactly and there is no seam. The presence gate (when the preset has one) is taken per
window; windows whose gate is below `gate_threshold` output exact silence (the absent-class remedy), and
`separate_detailed` says how many windows of each item it silenced (the CLI warns instead of returning a silent
file without a word).

Query texts: every text goes through `models.labels.canonical_query` before it is encoded (unless
`normalize_queries` is off), so a label-like query (`violin`, `Alarm_Clock`, `ALARM CLOCK`, `Violin, fiddle`)
reaches the encoder as its label's phrase, the form the engine's data asks in, and the same label in any written
form gives the same output in every entry point (`separate`, `evaluate`, the run's evaluation, pseudo-labelling).
Free text passes through.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.labels import canonical_query
from models.separator.base import apply_gate
from models.separator.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint
from models.separator.train import resolve_device
from models.text import CachedQueries, TextEncoder, load_text_encoder
from storage.audio import resample


def window_starts(n: int, win: int, hop: int) -> list[int]:
    if n <= win:
        return [0]
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:
        starts.append(n - win)
    return starts


def crossfade_weights(win: int, fade: int) -> np.ndarray:
    w = np.ones(win, dtype=np.float64)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        w[:fade] = ramp
        w[-fade:] = ramp[::-1]
    return w


@dataclass
class Separator:
    model: torch.nn.Module
    checkpoint: Checkpoint
    encoder: TextEncoder
    device: torch.device
    segment_s: float
    overlap: float = 0.25
    batch_size: int = 16
    gate_threshold: float = 0.5
    normalize_queries: bool = True  # label-like texts -> their label's phrase before encoding (module docstring)

    @classmethod
    def load(cls, ckpt: str | Path, device: str = "auto", text_encoder: TextEncoder | None = None,
             gate_threshold: float | None = None) -> "Separator":
        """Load a checkpoint; the text encoder is rebuilt from the spec recorded in it unless one is passed."""
        ck = load_checkpoint(ckpt)
        model = model_from_checkpoint(ck, ckpt)
        dev = resolve_device(device)
        model.to(dev).eval()
        enc = text_encoder or load_text_encoder(ck.text_encoder)
        if enc.dim != ck.hparams.get("query_dim"):
            raise ValueError(f"{ckpt}: text encoder dim {enc.dim} != checkpoint query_dim {ck.hparams.get('query_dim')}")
        cfg = ck.config
        thr = cfg.get("gate_threshold", 0.5) if gate_threshold is None else gate_threshold
        return cls(model=model, checkpoint=ck, encoder=enc, device=dev, segment_s=float(cfg.get("segment_s", 4.0)),
                   overlap=float(cfg.get("overlap", 0.25)), batch_size=int(cfg.get("infer_batch", 16)), gate_threshold=thr)

    def __post_init__(self) -> None:
        self._queries = CachedQueries(self.encoder)

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    def info(self) -> dict[str, str]:
        return {"backend": f"separator:{self.checkpoint.preset}", "version": self.checkpoint.code_version,
                "text_encoder": self.checkpoint.text_encoder}

    @torch.no_grad()
    def _run(self, windows: np.ndarray, pos: torch.Tensor, neg: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        outs, gates = [], []
        for i in range(0, len(windows), self.batch_size):
            mix = torch.from_numpy(windows[i:i + self.batch_size]).to(self.device)
            out = self.model(mix, pos[i:i + self.batch_size].to(self.device), neg[i:i + self.batch_size].to(self.device))
            outs.append(apply_gate(out, self.gate_threshold).float().cpu().numpy())
            g = torch.sigmoid(out.gate_logit).cpu().numpy() if out.gate_logit is not None else np.ones(len(mix))
            gates.append(g)
        return np.concatenate(outs), np.concatenate(gates)

    def query_text(self, text: str | None) -> str | None:
        """The text the encoder sees for a query side (`canonical_query` unless `normalize_queries` is off)."""
        return canonical_query(text) if self.normalize_queries else text

    def separate(self, mixtures: np.ndarray | Sequence[np.ndarray], sr: int, positive_texts: Sequence[str | None],
                 negative_texts: Sequence[str | None] | None = None, return_gate: bool = False):
        """Estimate the queried source of each mixture. `mixtures` is `[B, T]` or a list of `[T_i]` (any lengths);
        returns the same shape(s) at rate `sr` (and the mean presence per item with `return_gate`). A missing query
        side is None; at least one side per item."""
        res = self.separate_detailed(mixtures, sr, positive_texts, negative_texts)
        return (res.estimates, res.presence) if return_gate else res.estimates

    def separate_detailed(self, mixtures: np.ndarray | Sequence[np.ndarray], sr: int,
                          positive_texts: Sequence[str | None],
                          negative_texts: Sequence[str | None] | None = None) -> "Separation":
        """`separate` with what the gate did to each item and the texts the encoder saw."""
        single_array = isinstance(mixtures, np.ndarray)
        items = [np.asarray(m, dtype=np.float32) for m in (list(mixtures) if not single_array else mixtures)]
        if single_array and np.asarray(mixtures).ndim != 2:
            raise ValueError(f"mixtures must be [B, T], got shape {np.asarray(mixtures).shape}")
        negative_texts = list(negative_texts) if negative_texts is not None else [None] * len(items)
        if not (len(items) == len(positive_texts) == len(negative_texts)):
            raise ValueError(f"{len(items)} mixtures but {len(positive_texts)} positive / {len(negative_texts)} negative texts")
        for i, (p, n) in enumerate(zip(positive_texts, negative_texts)):
            if not p and not n:
                raise ValueError(f"item {i}: a query needs a positive or a negative text")
        msr = self.sample_rate
        win = int(round(self.segment_s * msr))
        hop = max(1, int(round(win * (1 - self.overlap))))
        fade = win - hop
        # cut every item into windows, run all windows of all items in shared batches
        wins, owners, starts, lengths, resampled = [], [], [], [], []
        for b, x in enumerate(items):
            if x.ndim != 1:
                raise ValueError(f"item {b}: expected mono [T], got shape {x.shape}")
            if not np.isfinite(x).all():
                raise ValueError(f"item {b}: mixture contains NaN or Inf")
            y = resample(x, sr, msr) if sr != msr else x
            resampled.append(y)
            lengths.append(len(y))
            for s in window_starts(len(y), win, hop):
                seg = y[s:s + win]
                wins.append(np.pad(seg, (0, win - len(seg))))
                owners.append(b)
                starts.append(s)
        texts = [(self.query_text(p), self.query_text(n)) for p, n in zip(positive_texts, negative_texts)]
        pos = self._queries([texts[o][0] for o in owners])
        neg = self._queries([texts[o][1] for o in owners])
        est, gate = self._run(np.stack(wins).astype(np.float32), pos, neg)
        has_gate = self.gate_threshold > 0 and getattr(self.model, "gate", None) is not None
        outputs, item_gate, item_closed = [], [], []
        for b, n in enumerate(lengths):
            acc, norm, gsum, gcount, closed = np.zeros(n), np.zeros(n), 0.0, 0, 0
            idx = [i for i, o in enumerate(owners) if o == b]
            first, last = idx[0], idx[-1]
            for i in idx:
                s = starts[i]
                w = crossfade_weights(win, fade)
                if fade > 0 and i == first:
                    w[:fade] = 1.0  # nothing to fade against at the edges of the item
                if fade > 0 and i == last:
                    w[-fade:] = 1.0
                e = est[i]
                seg = min(win, n - s)
                acc[s:s + seg] += w[:seg] * e[:seg]
                norm[s:s + seg] += w[:seg]
                gsum += float(gate[i])
                gcount += 1
                closed += int(has_gate and float(gate[i]) < self.gate_threshold)
            y = (acc / np.maximum(norm, 1e-8)).astype(np.float32)
            if sr != msr:
                y = resample(y, msr, sr)
                y = np.pad(y, (0, max(0, len(items[b]) - len(y))))[: len(items[b])]
            outputs.append(y.astype(np.float32))
            item_gate.append(gsum / max(1, gcount))
            item_closed.append(closed / max(1, gcount))
        result = np.stack(outputs) if single_array else outputs
        return Separation(result, np.array(item_gate), np.array(item_closed), texts)


@dataclass
class Separation:
    """What `Separator.separate_detailed` returns: the estimates (the shape(s) of the input), per item the mean
    presence-gate probability over its windows (1 without a gate) and the share of its windows the gate silenced
    (0 with the gate off), and the (positive, negative) texts the encoder saw."""

    estimates: np.ndarray | list[np.ndarray]
    presence: np.ndarray
    closed: np.ndarray
    texts: list[tuple[str | None, str | None]]
