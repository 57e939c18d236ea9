"""Audio I/O with explicit failure modes.

Every bad file raises `AudioError` whose `kind` is a stable, machine-readable reason (it becomes the quarantine
table's `error_kind`) and whose message names the file, so a 50k-file import can be triaged from one table.

`load_audio` decodes a clip whole (every stage that processes audio); `scan_audio` is the import's check: the
same verdicts in one streamed pass of fixed-size blocks (memory bounded whatever the clip's length), plus the two
things only an import asks: a file shorter than its header says (`truncated`) and a clip longer than the corpus
allows (`too_long`, decided from the header before any sample is decoded).
"""
from __future__ import annotations

import io
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

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
# What `scan_audio` adds to ERROR_KINDS (import-time only).
IMPORT_ERROR_KINDS = ERROR_KINDS + ("truncated", "too_long")

SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".caf", ".w64"}
MIN_SANE_RATE = 1000
MAX_SANE_RATE = 384_000


@reconstructible
class AudioError(ValueError):
    def __init__(self, path: str | Path, kind: str, message: str):
        assert kind in IMPORT_ERROR_KINDS, kind
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


@dataclass(frozen=True)
class AudioScan:
    """One streamed pass over a clip: what the import records (frames actually decoded, not the header's claim)
    and the mono frame powers its active span is computed from (`pipelines.mixing.loudness.frame_powers`' frames)."""

    sample_rate: int
    frames: int
    channels: int
    peak: float
    powers: np.ndarray  # float64 mean square of each `frame`-sample frame of the mono downmix
    frame: int

    @property
    def duration_s(self) -> float:
        return self.frames / float(self.sample_rate)


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """(bytes the RIFF `data` chunk declares, bytes present) when a WAV file ends before its data does; else None.

    Why parse the header here: libsndfile quietly shortens a truncated WAV to what is on disk, so a file cut in
    half by a failed copy would otherwise be imported as a shorter, valid-looking clip."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None  # RF64/W64 and others: libsndfile's own checks apply
        order = "<" if head[:4] == b"RIFF" else ">"
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            declared = struct.unpack(order + "I", chunk[4:8])[0]
            if chunk[:4] == b"data":
                present = size - pos - 8
                # 0 and 0xFFFFFFFF are what streaming writers leave when the length was unknown: not a truncation
                return (declared, present) if declared not in (0, 0xFFFFFFFF) and declared > present else None
            pos += 8 + declared + (declared & 1)
    return None


def _soundfile_blocks(sfile: "sf.SoundFile", block: int) -> Iterator[np.ndarray]:
    while True:
        data = sfile.read(block, dtype="float32", always_2d=True)
        if not len(data):
            return
        yield data


def scan_audio(path: str | Path, cfg: AudioConfig | None = None, *, max_seconds: float | None = None,
               frame_s: float = 0.05, block_frames: int = 1 << 16) -> AudioScan:
    """Validate a clip as `load_audio` would (same kinds, for a mono result), streaming blocks of about
    `block_frames` frames, and return its `AudioScan`. Rate, channels and `max_seconds` (`too_long`) are judged from
    the header before decoding; a file that decodes fewer frames than its header announces, or fails part-way, is
    `truncated`. Formats soundfile cannot open are decoded whole through pydub/ffmpeg (no streaming there)."""
    cfg = cfg or AudioConfig()
    path = Path(path)
    _check_file(path)
    try:
        sfile = sf.SoundFile(str(path))
    except Exception:  # not a soundfile format (or corrupt): _read_raw raises the precise AudioError
        data, sr = _read_raw(path)
        return _scan_blocks(path, cfg, max_seconds, frame_s, sr, data.shape[0], data.shape[1], iter([data]), None)
    with sfile:
        sr, frames, channels = int(sfile.samplerate), int(sfile.frames), int(sfile.channels)
        shortfall = _wav_shortfall(path) if path.suffix.lower() in (".wav", ".wave") or sfile.format == "WAV" else None
        n = max(1, int(round(frame_s * sr))) if sr > 0 else 1
        blocks = _soundfile_blocks(sfile, max(1, block_frames // n) * n)
        return _scan_blocks(path, cfg, max_seconds, frame_s, sr, frames, channels, blocks, shortfall)


def _scan_blocks(path: Path, cfg: AudioConfig, max_seconds: float | None, frame_s: float, sr: int, frames: int,
                 channels: int, blocks: Iterator[np.ndarray], shortfall: tuple[int, int] | None) -> AudioScan:
    if not (MIN_SANE_RATE <= sr <= MAX_SANE_RATE):
        raise AudioError(path, "bad_sample_rate", f"sample rate {sr} Hz outside [{MIN_SANE_RATE}, {MAX_SANE_RATE}]")
    if frames == 0:
        raise AudioError(path, "zero_length", "no audio frames")
    if channels > cfg.max_channels:
        raise AudioError(path, "too_many_channels", f"{channels} channels > max_channels={cfg.max_channels}")
    if max_seconds is not None and frames / sr > max_seconds:
        raise AudioError(path, "too_long", f"{frames / sr:.1f} s > max_seconds={max_seconds:g} (header; not decoded)")
    if shortfall is not None:
        raise AudioError(path, "truncated", f"the WAV data chunk declares {shortfall[0]} bytes, only {shortfall[1]} "
                                            "are in the file (cut short by a copy or download?)")
    n = max(1, int(round(frame_s * sr)))
    decoded, bad, peak = 0, 0, 0.0
    powers: list[np.ndarray] = []
    try:
        for data in blocks:
            decoded += data.shape[0]
            finite = np.isfinite(data)
            if not finite.all():
                bad += int(data.size - finite.sum())
                continue  # the clip is rejected below; the count names how much is broken
            peak = max(peak, float(np.abs(data).max()))
            mono = data[:, 0] if cfg.downmix == "first" else data.mean(axis=1) if channels > 1 else data[:, 0]
            powers.append(_block_powers(mono, n))
    except Exception as exc:  # libsndfile fails where the stream breaks off
        raise AudioError(path, "truncated", f"decoding stopped at frame {decoded} of the {frames} the header "
                                            f"announces: {exc}") from exc
    if decoded == 0:
        raise AudioError(path, "zero_length", "no audio frames")
    if decoded < frames:
        raise AudioError(path, "truncated", f"decoded {decoded} frames, the header announces {frames}")
    if bad:
        raise AudioError(path, "non_finite", f"{bad} NaN/Inf samples")
    duration = decoded / sr
    if duration < cfg.min_duration_s:
        raise AudioError(path, "too_short", f"{duration:.3f} s < min_duration_s={cfg.min_duration_s}")
    if not cfg.allow_silent and (peak == 0.0 or 20 * np.log10(peak) < cfg.silence_dbfs):
        raise AudioError(path, "silent", f"digital silence (peak {peak:.3g} below {cfg.silence_dbfs} dBFS)")
    if channels > 1 and cfg.downmix == "error":
        raise AudioError(path, "too_many_channels", f"{channels} channels and downmix='error'")
    return AudioScan(sr, decoded, channels, peak, np.concatenate(powers) if powers else np.zeros(0), n)


def _block_powers(mono: np.ndarray, n: int) -> np.ndarray:
    """Mean square per n-sample frame of one block (blocks hold whole frames except the clip's last)."""
    x = np.asarray(mono, dtype=np.float64)
    full = (x.size // n) * n
    frames = x[:full].reshape(-1, n)
    out = np.einsum("ij,ij->i", frames, frames) / n
    return np.append(out, np.mean(x[full:] ** 2)) if full < x.size else out


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
