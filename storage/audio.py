"""Audio I/O with explicit failure modes.

Every bad file raises `AudioError` whose `kind` is a stable, machine-readable reason (it becomes the quarantine
table's `error_kind`) and whose message names the file, so a 50k-file import can be triaged from one table.
"""
from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import Field

from storage.configio import Section
from storage.errors import reconstructible

ERROR_KINDS = (
    "missing",
    "unreadable",
    "zero_length",
    "too_short",
    "non_finite",
    "silent",
    "bad_sample_rate",
    "too_many_channels",
)

SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".caf", ".w64"}
MIN_SANE_RATE = 1000
MAX_SANE_RATE = 384_000


@reconstructible
class AudioError(ValueError):
    def __init__(self, path: str | Path, kind: str, message: str):
        assert kind in ERROR_KINDS, kind
        self.path = str(path)
        self.kind = kind
        self.message = message
        super().__init__(f"{self.path}: {kind}: {message}")


class AudioConfig(Section):
    """How every stage sees audio: one rate, mono, bounded duration."""

    sample_rate: int = Field(16000, ge=MIN_SANE_RATE, le=MAX_SANE_RATE)
    downmix: Literal["mean", "first", "error"] = "mean"
    max_channels: int = Field(8, ge=1)
    min_duration_s: float = Field(0.5, ge=0.0)
    silence_dbfs: float = Field(-90.0, le=0.0)  # peak below this = digital silence
    allow_silent: bool = False


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / float(self.sample_rate) if self.sample_rate else 0.0


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None or shutil.which("avconv") is not None


def _read_raw(path: Path) -> tuple[np.ndarray, int]:
    """Decode to float32 [frames, channels] and the native rate.

    soundfile (libsndfile >= 1.1 also decodes MP3) is tried first for every file; pydub/ffmpeg is the fallback
    for other containers (m4a, aac, wma, ...) and only when ffmpeg is installed.
    """
    ext = path.suffix.lower()
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return data, int(sr)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        if ext in SOUNDFILE_EXTS or not ffmpeg_available():
            hint = "" if ext in SOUNDFILE_EXTS else " (install ffmpeg to read this format through pydub)"
            raise AudioError(path, "unreadable", f"cannot decode: {exc}{hint}") from exc
    try:
        from pydub import AudioSegment

        seg = AudioSegment.from_file(str(path))
    except Exception as exc:
        raise AudioError(path, "unreadable", f"cannot decode with pydub/ffmpeg: {exc}") from exc
    samples = np.array(seg.get_array_of_samples(), dtype=np.float32)
    scale = float(1 << (8 * seg.sample_width - 1))
    data = (samples / scale).reshape(-1, seg.channels)
    return data, int(seg.frame_rate)


def _check_file(path: Path) -> None:
    """Fail with the precise reason before any decoder gives a vaguer one (an empty file is not 'corrupt')."""
    if not path.exists():
        raise AudioError(path, "missing", "file does not exist")
    if path.is_dir():
        raise AudioError(path, "unreadable", "is a directory")
    if path.stat().st_size == 0:
        raise AudioError(path, "zero_length", "file is empty (0 bytes)")


def probe(path: str | Path) -> AudioInfo:
    """Header-only inspection (cheap) for soundfile formats."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
        return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))
    except Exception:
        data, sr = _read_raw(path)
        return AudioInfo(sr, data.shape[0], data.shape[1])


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio sinc) along the last axis."""
    if orig_sr == target_sr:
        return audio
    import torch
    import torchaudio.functional as AF

    tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    out = AF.resample(tensor, orig_sr, target_sr)
    return out.numpy().astype(np.float32, copy=False)


def load_audio(path: str | Path, cfg: AudioConfig | None = None, mono: bool = True) -> np.ndarray:
    """Load, validate, downmix and resample to `cfg.sample_rate`.

    Returns float32 `[frames]` when mono else `[channels, frames]`.
    """
    cfg = cfg or AudioConfig()
    path = Path(path)
    _check_file(path)
    data, sr = _read_raw(path)
    if not (MIN_SANE_RATE <= sr <= MAX_SANE_RATE):
        raise AudioError(path, "bad_sample_rate", f"sample rate {sr} Hz outside [{MIN_SANE_RATE}, {MAX_SANE_RATE}]")
    frames, channels = data.shape
    if frames == 0:
        raise AudioError(path, "zero_length", "no audio frames")
    if channels > cfg.max_channels:
        raise AudioError(path, "too_many_channels", f"{channels} channels > max_channels={cfg.max_channels}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(path, "non_finite", f"{bad} NaN/Inf samples")
    duration = frames / sr
    if duration < cfg.min_duration_s:
        raise AudioError(path, "too_short", f"{duration:.3f} s < min_duration_s={cfg.min_duration_s}")
    peak = float(np.abs(data).max())
    if not cfg.allow_silent and (peak == 0.0 or 20 * np.log10(peak) < cfg.silence_dbfs):
        raise AudioError(path, "silent", f"digital silence (peak {peak:.3g} below {cfg.silence_dbfs} dBFS)")
    audio = data.T  # [channels, frames]
    if mono and channels > 1:
        if cfg.downmix == "error":
            raise AudioError(path, "too_many_channels", f"{channels} channels and downmix='error'")
        audio = audio[:1] if cfg.downmix == "first" else audio.mean(axis=0, keepdims=True)
    audio = resample(audio, sr, cfg.sample_rate)
    return audio[0] if mono else audio


def encode_audio(audio: np.ndarray, sample_rate: int, fmt: str = "FLAC", subtype: str | None = None,
                 compression_level: float | None = None) -> bytes:
    """Encode `[frames]` or `[channels, frames]` float audio; FLAC defaults to 24-bit so tuples sum within 1e-6.

    `compression_level` is libsndfile's FLAC setting in [0, 1] (0 = fastest, 1 = smallest; None = library default,
    FLAC level 5). PCM samples outside [-1, 1] are clipped; audio already inside (every rendered tuple) is passed
    through without the copy, which gives the same bytes.
    """
    if compression_level is not None and not 0.0 <= compression_level <= 1.0:
        raise ValueError(f"compression_level must be in [0, 1] or None, got {compression_level}")
    arr = np.asarray(audio, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr.T
    fmt = fmt.upper()
    if subtype is None:
        subtype = "PCM_24" if fmt == "FLAC" else "FLOAT"
    if subtype.startswith("PCM") and arr.size and (arr.max() > 1.0 or arr.min() < -1.0):
        arr = np.clip(arr, -1.0, 1.0)
    buf = io.BytesIO()
    level = compression_level if fmt == "FLAC" else None
    sf.write(buf, arr, sample_rate, format=fmt, subtype=subtype, compression_level=level)
    return buf.getvalue()


def decode_audio(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode encoded bytes to float32 (mono `[frames]` or `[channels, frames]`)."""
    try:
        arr, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(name, "unreadable", f"cannot decode: {exc}") from exc
    arr = arr.T
    return (arr[0] if arr.shape[0] == 1 else arr), int(sr)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Atomically write FLAC or WAV (chosen by extension)."""
    from storage.atomic import atomic_write_bytes

    path = Path(path)
    fmt = {".flac": "FLAC", ".wav": "WAV"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: only .flac and .wav can be written")
    atomic_write_bytes(path, encode_audio(audio, sample_rate, fmt, subtype))
    return path
