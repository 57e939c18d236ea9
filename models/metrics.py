"""Separation metrics, batched, in float64 torch.

Every function takes `[..., T]` tensors (or numpy arrays) and returns one value per leading index, computed in
float64 because the energy ratios of near-perfect estimates (60-120 dB) lose all precision in float32.

Silent references and perfect estimates never produce NaN or an exception. The documented clamp is the same one
torchmetrics uses: both energies of a ratio get `eps` added, ``10 log10((num + eps) / (den + eps))`` with
``eps = EPS`` (1e-8 on float64 by default, i.e. -80 dB for a unit-energy signal). Consequences worth knowing:

- perfect estimate: ``10 log10((|x|^2 + eps) / eps)`` (finite, large);
- silent reference, non-silent estimate: a very negative value (the estimate is pure error);
- silent reference and silent estimate: 0 dB.

Callers that want to score silent targets use `silence_sdr` / `silence_sisdr` (ClearSep App. B.2), which are
defined relative to the mixture and are meaningful there.

SI-SDR states its mean convention explicitly through `zero_mean`: torchmetrics and fast_bss_eval differ by more
than 1 dB on signals with a DC offset, so no default is hidden.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]
EPS = 1e-8


def _f64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor or ndarray, got {type(x).__name__}")
    return x.detach().to(torch.float64) if not x.requires_grad else x.to(torch.float64)


def _pair(est: ArrayLike, ref: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    e, r = _f64(est), _f64(ref)
    if e.shape != r.shape:
        raise ValueError(f"estimate shape {tuple(e.shape)} != reference shape {tuple(r.shape)}")
    if e.shape[-1] == 0:
        raise ValueError("signals have zero samples")
    return e, r


def _ratio_db(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    return 10.0 * torch.log10((num + eps) / (den + eps))


def sdr(est: ArrayLike, ref: ArrayLike, eps: float = EPS) -> torch.Tensor:
    """Plain energy-ratio SDR (ClearSep eq. 6, = SNR): ``10 log10(|x|^2 / |x - x_hat|^2)``.

    Not the BSS-eval SDR (which allows a 512-tap distortion filter); matches torchmetrics'
    `signal_noise_ratio(zero_mean=False)` exactly (same eps clamp).
    """
    e, r = _pair(est, ref)
    return _ratio_db((r * r).sum(-1), ((r - e) ** 2).sum(-1), eps)


def si_sdr(est: ArrayLike, ref: ArrayLike, zero_mean: bool, eps: float = EPS) -> torch.Tensor:
    """Scale-invariant SDR (ClearSep eq. 8): ``s = <x_hat, x> / |x|^2 x``, ``10 log10(|s|^2 / |x_hat - s|^2)``.

    `zero_mean=True` subtracts each signal's mean first (torchmetrics' default, CLAPSep's loss); False uses the raw
    signals (fast_bss_eval's `si_sdr` convention, which keeps a DC offset as part of the signal). The projection
    coefficient is ``(<x_hat, x> + eps) / (|x|^2 + eps)`` (torchmetrics' clamp), so a silent reference gives a
    silent projection instead of 0/0.
    """
    e, r = _pair(est, ref)
    if zero_mean:
        e = e - e.mean(-1, keepdim=True)
        r = r - r.mean(-1, keepdim=True)
    alpha = ((e * r).sum(-1, keepdim=True) + eps) / ((r * r).sum(-1, keepdim=True) + eps)
    s = alpha * r
    return _ratio_db((s * s).sum(-1), ((e - s) ** 2).sum(-1), eps)


def sdri(est: ArrayLike, ref: ArrayLike, mixture: ArrayLike, eps: float = EPS) -> torch.Tensor:
    """SDR improvement (ClearSep eq. 7): ``SDR(x_hat, x) - SDR(mixture, x)``."""
    return sdr(est, ref, eps) - sdr(mixture, ref, eps)


def si_sdri(est: ArrayLike, ref: ArrayLike, mixture: ArrayLike, zero_mean: bool, eps: float = EPS) -> torch.Tensor:
    """SI-SDR improvement (ClearSep eq. 9): ``SISDR(x_hat, x) - SISDR(mixture, x)``."""
    return si_sdr(est, ref, zero_mean, eps) - si_sdr(mixture, ref, zero_mean, eps)


def _remix(tracks: ArrayLike | Sequence[ArrayLike]) -> torch.Tensor:
    if isinstance(tracks, (list, tuple)):
        return torch.stack([_f64(t) for t in tracks], dim=-2).sum(-2)
    return _f64(tracks).sum(-2)


def re_sdr(tracks: ArrayLike | Sequence[ArrayLike], mixture: ArrayLike, eps: float = EPS) -> torch.Tensor:
    """Re-SDR (ClearSep App. B.3): ``SDR(sum_k track_k, X)``; tracks are `[..., K, T]` or a list of `[..., T]`."""
    return sdr(_remix(tracks), mixture, eps)


def re_sisdr(tracks: ArrayLike | Sequence[ArrayLike], mixture: ArrayLike, zero_mean: bool = False, eps: float = EPS) -> torch.Tensor:
    """Re-SISDR (ClearSep App. B.3): ``SISDR(sum_k track_k, X)``; raw signals by default (no mean removal)."""
    return si_sdr(_remix(tracks), mixture, zero_mean, eps)


def silence_sdr(est: ArrayLike, mixture: ArrayLike, eps: float = EPS) -> torch.Tensor:
    """Silence-SDR (ClearSep eq. 10) for an absent-class query: ``SDR(X - x_hat, X) = 10 log10(|X|^2 / |x_hat|^2)``.

    A perfectly silent output reaches ``10 log10((|X|^2 + eps) / eps)`` (about 80 dB above eps for unit energy).
    """
    e, m = _pair(est, mixture)
    return _ratio_db((m * m).sum(-1), (e * e).sum(-1), eps)


def silence_sisdr(est: ArrayLike, mixture: ArrayLike, zero_mean: bool = False, eps: float = EPS) -> torch.Tensor:
    """Silence-SISDR (ClearSep eq. 11): ``SISDR(X - x_hat, X)`` with the projection onto the mixture X."""
    e, m = _pair(est, mixture)
    return si_sdr(m - e, m, zero_mean, eps)


def frame_rms(x: ArrayLike, frame: int, hop: int) -> torch.Tensor:
    """Frame-wise RMS `[..., F]` with frames of `frame` samples every `hop` (the tail is zero-padded)."""
    t = _f64(x)
    n = t.shape[-1]
    n_frames = max(1, 1 + int(np.ceil(max(0, n - frame) / hop)))
    pad = (n_frames - 1) * hop + frame - n
    if pad > 0:
        t = torch.nn.functional.pad(t, (0, pad))
    frames = t.unfold(-1, frame, hop)
    return frames.pow(2).mean(-1).sqrt()


def f1_decision(est: ArrayLike, ref: ArrayLike, sample_rate: int, threshold: float = 0.01, frame_s: float = 0.02, hop_s: float = 0.01) -> torch.Tensor:
    """F1 decision error (PromptSep §3.4): frame RMS of output and reference, binarised at `threshold` (0.01),
    F1 of the output's activity against the reference's. Higher is better.

    Both sequences all-inactive (silent target correctly silenced) is a perfect decision: F1 = 1; exactly one side
    inactive gives 0. Frame length/hop are parameters because the paper does not state them (20 ms / 10 ms here).
    """
    e, r = _pair(est, ref)
    frame = max(1, int(round(frame_s * sample_rate)))
    hop = max(1, int(round(hop_s * sample_rate)))
    pe = frame_rms(e, frame, hop) > threshold
    pr = frame_rms(r, frame, hop) > threshold
    tp = (pe & pr).sum(-1).to(torch.float64)
    fp = (pe & ~pr).sum(-1).to(torch.float64)
    fn = (~pe & pr).sum(-1).to(torch.float64)
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1.0), torch.ones_like(denom))


def vad_spans(x: np.ndarray, sample_rate: int, silence_dbfs: float = -40.0, min_sound_s: float = 0.25, hop_s: float = 0.01) -> list[tuple[float, float]]:
    """Sounding intervals `[(start_s, end_s)]` of one mono signal, pydub-`detect_nonsilent` style (SAM Audio §4.2.3):
    10 ms frames whose RMS exceeds `silence_dbfs` (relative to full scale 1.0), merged, runs shorter than
    `min_sound_s` dropped. Implemented on frames in numpy so it costs O(T) instead of pydub's O(T x min_len)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"vad_spans expects a mono [T] signal, got shape {x.shape}")
    hop = max(1, int(round(hop_s * sample_rate)))
    rms = frame_rms(x, hop, hop).numpy()
    active = 20 * np.log10(np.maximum(rms, 1e-12)) > silence_dbfs
    spans: list[tuple[float, float]] = []
    start = None
    for i, a in enumerate(np.append(active, False)):
        if a and start is None:
            start = i
        elif not a and start is not None:
            s, e = start * hop / sample_rate, min(i * hop, len(x)) / sample_rate
            if e - s >= min_sound_s:
                spans.append((s, e))
            start = None
    return spans


def span_iou(pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]) -> float:
    """SpanIoU (SAM Audio §5.4): total duration of the intersection of two span sets over that of their union.

    Two empty span sets agree perfectly (1.0); overlapping spans inside one set are merged first.
    """

    def merge(spans: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for s, e in sorted((float(a), float(b)) for a, b in spans):
            if e < s:
                raise ValueError(f"span end {e} before start {s}")
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        return out

    p, r = merge(pred), merge(ref)
    length = lambda spans: sum(e - s for s, e in spans)  # noqa: E731
    inter = 0.0
    i = j = 0
    while i < len(p) and j < len(r):
        lo, hi = max(p[i][0], r[j][0]), min(p[i][1], r[j][1])
        inter += max(0.0, hi - lo)
        if p[i][1] < r[j][1]:
            i += 1
        else:
            j += 1
    union = length(p) + length(r) - inter
    if union <= 0:
        return 1.0
    return inter / union


def span_iou_audio(est: np.ndarray, ref_spans: Sequence[Sequence[float]], sample_rate: int, **vad: float) -> float:
    """SpanIoU of the VAD spans of a separated output against reference spans (SAM Audio's span metric)."""
    return span_iou(vad_spans(est, sample_rate, **vad), ref_spans)
