"""The sampled candidates' sound and pictures: short excerpts of mixture, track and residual, and a spectrogram
thumbnail of each.

Where the track comes from: the filter step keeps the audio of *kept* candidates only (`kept_audio/`, FLAC); a
dropped candidate's track was never stored. Dropped ones are re-separated with the iteration's own separator
checkpoint and the candidate's recorded query and variant (texts, query mode, input gain) through the same
windowing as the pseudo-labeller, so the page plays what the filters judged (to float rounding), not an
approximation. The mixture is the scene file; the residual is mixture - track, as the pseudo-labeller defines it.

Format: 16-bit PCM WAV at the run's sample rate, mono. Every browser plays WAV from `file://` (Chromium, Firefox,
Safari, including older Safari that lacks FLAC-in-<audio> and Opus), it needs no encoder beyond libsndfile, and
an excerpt is short (`excerpt_s`, 4 s = 128 kB at 16 kHz), so FLAC's ~2x saving is not worth a compatibility
risk. `audio_format="flac"` is available where size matters more (Chromium and Firefox play it).
Thumbnails: log-magnitude STFT pooled to a fixed small size, on a fixed dBFS scale shared by all images so
mixture, track and residual are comparable at a glance.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from storage.atomic import atomic_path, atomic_write_bytes

FORMATS = {"wav": ("WAV", "PCM_16", ".wav"), "flac": ("FLAC", "PCM_16", ".flac")}
THUMB_SIZE = (64, 192)  # rows (frequency), columns (time)
DB_RANGE = (-100.0, -10.0)


def safe_name(candidate_id: str) -> str:
    """A file name for an id: readable, and unique via a short hash (ids may hold any characters)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", candidate_id)[:80]
    return f"{stem}-{hashlib.sha1(candidate_id.encode()).hexdigest()[:8]}"


def excerpt_window(track: np.ndarray, sample_rate: int, seconds: float) -> tuple[int, int]:
    """(start, stop) frames of the `seconds` window holding the most track energy (on a 0.1 s grid), so the
    excerpt plays the part of the scene where the track is; the whole signal when it is shorter."""
    n = len(track)
    width = int(round(seconds * sample_rate))
    if n <= width:
        return 0, n
    energy = np.concatenate([[0.0], np.cumsum(np.asarray(track, dtype=np.float64) ** 2)])
    hop = max(1, sample_rate // 10)
    starts = np.arange(0, n - width + 1, hop)
    best = int(starts[np.argmax(energy[starts + width] - energy[starts])])
    return best, best + width


def spectrogram_db(audio: np.ndarray, n_fft: int = 512) -> np.ndarray:
    """Log-magnitude STFT [bins, frames] in dBFS (a full-scale sine reads about 0 dB)."""
    audio = np.asarray(audio, dtype=np.float64)
    hop = n_fft // 4
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = 1 + (len(audio) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(audio[idx] * window, axis=1)).T / (window.sum() / 2)
    return 20.0 * np.log10(np.maximum(mag, 1e-10))


def _pool_axis(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Mean over `size` equal spans of `axis` (a span of a too-short axis repeats its one element)."""
    n = a.shape[axis]
    start = np.minimum(np.linspace(0, n, size + 1).astype(int)[:-1], n - 1)
    stop = np.maximum(np.linspace(0, n, size + 1).astype(int)[1:], start + 1)
    cs = np.concatenate([np.zeros_like(np.take(a, [0], axis=axis)), np.cumsum(a, axis=axis)], axis=axis)
    shape = [1] * a.ndim
    shape[axis] = size
    return (np.take(cs, stop, axis=axis) - np.take(cs, start, axis=axis)) / (stop - start).reshape(shape)


def _pool(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Mean-pool (or repeat) `a` to [rows, cols]: a fixed thumbnail size whatever the excerpt length."""
    return _pool_axis(_pool_axis(a, rows, 0), cols, 1)


def write_thumbnail(audio: np.ndarray, path: Path) -> Path:
    import matplotlib.image as mpimg

    img = _pool(spectrogram_db(audio), *THUMB_SIZE)
    with atomic_path(path, suffix=".png") as tmp:
        mpimg.imsave(tmp, img, cmap="magma", vmin=DB_RANGE[0], vmax=DB_RANGE[1], origin="lower", format="png")
    return path


def write_clip(audio: np.ndarray, sample_rate: int, path: Path, audio_format: str) -> Path:
    from storage.audio import encode_audio

    fmt, subtype, _ = FORMATS[audio_format]
    atomic_write_bytes(path, encode_audio(np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), sample_rate, fmt, subtype))
    return path


def kept_tracks(filter_root: Path, ids: set[str]) -> dict[str, np.ndarray]:
    """The stored tracks (kept candidates only) among `ids`."""
    from engine.sinks import read_kept_audio
    from storage.audio import decode_audio

    return {cid: decode_audio(data, f"{filter_root}/kept_audio:{cid}")[0]
            for cid, (data, _) in read_kept_audio(filter_root).items() if cid in ids}


def reseparate(checkpoint: str, rows: Sequence[dict[str, Any]], mixtures: dict[str, np.ndarray], sample_rate: int,
               window_s: float, overlap_s: float) -> dict[str, np.ndarray]:
    """Tracks of `rows` (candidate rows of one iteration) from its separator, as the pseudo-labeller made them:
    per scene and variant one batch, the mixture scaled by the variant's gain, the estimate scaled back."""
    from models.separator.infer import Separator
    from pipelines.pseudolabel.candidates import separate_variant

    if not rows:
        return {}
    if not checkpoint or not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: separator checkpoint missing: cannot re-separate dropped candidates")
    sep = Separator.load(checkpoint, "cpu")
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["scene_id"], r.get("query_mode") or "posneg", float(r.get("gain_db") or 0.0)), []).append(r)
    out: dict[str, np.ndarray] = {}
    for (scene, _, gain_db), group in sorted(groups.items()):
        group.sort(key=lambda r: r.get("query_index") or 0)
        est = separate_variant(sep.separate, mixtures[scene], sample_rate, [r["positive_text"] for r in group],
                               [r.get("negative_text") for r in group], float(10.0 ** (gain_db / 20.0)), window_s,
                               overlap_s)
        out.update({r["candidate_id"]: est[i].astype(np.float32) for i, r in enumerate(group)})
    return out
