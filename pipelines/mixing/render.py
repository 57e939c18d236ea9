"""Render a MixSpec into (mixture, target, residual) and build the shard sample.

Invariants (tested):
  * `mixture == target + residual` exactly in float32: the mixture is *computed* as that float32 sum;
  * no clipping: when any of the three would peak above `peak_limit`, target and residual are scaled by one common
    factor (so SNRs and the sum identity survive);
  * each component's loudness equals its spec level (active-frame RMS, see loudness.py) before the common scale,
    so realised SNRs equal sampled SNRs.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipelines.mixing.config import SpanConfig
from pipelines.mixing.loudness import db_to_gain, gain_to_level
from pipelines.mixing.prompts import query_text
from pipelines.mixing.spans import detect_spans
from pipelines.mixing.spec import MixSpec
from storage.audio import encode_audio
from storage.version import code_version

ClipLoader = Callable[[str, int], np.ndarray]


class RenderError(ValueError):
    """A spec that cannot be rendered (a component is silent where it is placed); names key and clip."""


@dataclass
class RenderedTuple:
    spec: MixSpec
    mixture: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    spans: list[list[float]]
    scale: float
    components: list[np.ndarray] = field(default_factory=list)  # scaled to their levels, before the common scale


def _segment(clip: np.ndarray, start: int, length: int, onset: int, total: int) -> tuple[int, np.ndarray]:
    """The clip piece that lands inside the mixture, as (onset, float64 samples); never allocates the full length."""
    piece = np.asarray(clip[start:start + length], dtype=np.float64)
    end = min(total, onset + piece.shape[0])
    return onset, piece[: max(0, end - onset)]


def _aligned_level_gain(onset: int, piece: np.ndarray, level_db: float, sr: int, frame_s: float, gate_db: float, total: int) -> float:
    """gain_to_level of the piece as placed in the full-length buffer, computed on the frame-aligned region only.

    Frames outside the region are all-zero, hence inactive (or absent), so the result equals the full-buffer value.
    """
    n = max(1, int(round(frame_s * sr)))
    a = (onset // n) * n
    b = min(total, -(-(onset + piece.shape[0]) // n) * n)
    region = np.zeros(max(b - a, 0))
    region[onset - a:onset - a + piece.shape[0]] = piece
    return gain_to_level(region, level_db, sr, frame_s, gate_db)


def _peak(x: np.ndarray) -> float:
    """max |x| without allocating |x|."""
    return float(max(x.max(initial=0.0), -x.min(initial=0.0)))


def _full(onset: int, piece: np.ndarray, total: int) -> np.ndarray:
    buf = np.zeros(total)
    buf[onset:onset + piece.shape[0]] = piece
    return buf


def render(spec: MixSpec, loader: ClipLoader, span_cfg: SpanConfig | None = None, keep_components: bool = False) -> RenderedTuple:
    """Deterministic: the same spec and source files give bit-identical arrays.

    `span_cfg` overrides the span parameters recorded in the spec (None = use the recorded ones).
    """
    sr, total = spec.sample_rate, spec.num_frames
    segments: list[tuple[int, np.ndarray]] = []
    for comp in spec.components:
        clip = loader(comp.path, sr)
        onset, piece = _segment(clip, int(round(comp.source_start_s * sr)), int(round(comp.duration_s * sr)), int(round(comp.onset_s * sr)), total)
        try:
            if comp.level_db is not None:
                gain = _aligned_level_gain(onset, piece, comp.level_db, sr, spec.frame_s, spec.gate_db, total)
            else:
                gain = db_to_gain(comp.gain_db)
        except ValueError:
            raise RenderError(f"{spec.key}: clip {comp.clip_id} ({comp.path}) is silent at {comp.source_start_s:.3f}+{comp.duration_s:.3f} s") from None
        segments.append((onset, piece * gain))
    for group in spec.groups:
        summed = np.zeros(total)
        for i in group.members:
            onset, piece = segments[i]
            summed[onset:onset + piece.shape[0]] += piece
        try:
            gain = gain_to_level(summed, group.level_db, sr, spec.frame_s, spec.gate_db)
        except ValueError:
            raise RenderError(f"{spec.key}: sub-mixture {group.members} is silent") from None
        for i in group.members:
            segments[i] = (segments[i][0], segments[i][1] * gain)
    target = np.zeros(total)
    residual = np.zeros(total)
    for comp, (onset, piece) in zip(spec.components, segments):
        dest = target if comp.role == "target" and not spec.silent_target else residual
        dest[onset:onset + piece.shape[0]] += piece
    peak = max(_peak(target), _peak(residual), _peak(target + residual))
    scale = min(1.0, spec.peak_limit / peak) if peak > 0 else 1.0
    if scale != 1.0:
        target *= scale
        residual *= scale
    target32 = target.astype(np.float32)
    residual32 = residual.astype(np.float32)
    mixture32 = target32 + residual32
    if span_cfg is None:
        span_cfg = SpanConfig(**spec.span_params)
    spans = detect_spans(target32, sr, span_cfg) if not spec.silent_target else []
    components = [_full(onset, piece, total) for onset, piece in segments] if keep_components else []
    return RenderedTuple(spec, mixture32, target32, residual32, spans, float(scale), components)


def sample_json(t: RenderedTuple, config_hash: str = "") -> dict[str, Any]:
    """The per-sample JSON of the shard contract (docs/ARCHITECTURE.md)."""
    s = t.spec
    pos_text = query_text(s.positive_labels) if s.query_mode in ("pos", "posneg") else None
    neg_text = query_text(s.negative_labels) if s.query_mode in ("neg", "posneg") else None
    return {
        "key": s.key,
        "sample_rate": s.sample_rate,
        "num_frames": s.num_frames,
        "duration_s": s.num_frames / s.sample_rate,
        "recipe": s.recipe,
        "operator": s.operator,
        "prompt": s.prompt,
        "positive_labels": list(s.positive_labels),
        "negative_labels": list(s.negative_labels),
        "positive_text": pos_text,
        "negative_text": neg_text,
        "query_mode": s.query_mode,
        "silent_target": s.silent_target,
        "target_labels": s.target_labels,
        "residual_labels": s.residual_labels,
        "spans": t.spans,
        "spec": s.to_dict(),
        "render": {"scale": t.scale},
        "seed": s.seed,
        "lineage": {"source_clip_ids": s.source_clip_ids, "recipe": s.recipe, "config_hash": config_hash, "code_version": code_version()},
    }


_ENCODERS: dict[int, ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_ENCODERS.clear)  # a forked child has none of the parent's threads


def _encoder_pool(threads: int) -> ThreadPoolExecutor:
    """One lazily built pool per size and process (never pickled with a stage; forked workers build their own)."""
    pool = _ENCODERS.get(threads)
    if pool is None:
        pool = _ENCODERS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="stemforge-flac")
    return pool


def to_shard_sample(t: RenderedTuple, config_hash: str = "", compression_level: float | None = None,
                    encode_threads: int = 1) -> dict[str, Any]:
    """`{"__key__", "mix.flac", "target.flac", "residual.flac" (when non-silent), "json"}` with 24-bit FLAC audio.

    `compression_level` (FLAC, 0 = fastest .. 1 = smallest, None = libsndfile's default) changes bytes, never samples.
    `encode_threads > 1` encodes the stems concurrently (libsndfile releases the GIL): same bytes, lower latency
    when a spare core exists; keep 1 where each worker is given one CPU.
    """
    if encode_threads < 1:
        raise ValueError(f"encode_threads must be >= 1, got {encode_threads}")
    sr = t.spec.sample_rate
    stems = {"mix.flac": t.mixture, "target.flac": t.target}
    if np.any(t.residual):
        stems["residual.flac"] = t.residual
    if encode_threads == 1:
        encoded = {name: encode_audio(audio, sr, "FLAC", compression_level=compression_level) for name, audio in stems.items()}
    else:
        pool = _encoder_pool(encode_threads)
        futures = {name: pool.submit(encode_audio, audio, sr, "FLAC", compression_level=compression_level)
                   for name, audio in stems.items()}
        encoded = {name: future.result() for name, future in futures.items()}
    sample: dict[str, Any] = {"__key__": t.spec.key, "mix.flac": encoded["mix.flac"], "target.flac": encoded["target.flac"],
                              "json": sample_json(t, config_hash)}
    if "residual.flac" in encoded:
        sample["residual.flac"] = encoded["residual.flac"]
    return sample
