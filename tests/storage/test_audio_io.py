"""Audio I/O: decoding, downmix, resampling, encoding, and every failure mode with a clear reason naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from storage.audio import (
    ERROR_KINDS,
    AudioConfig,
    AudioError,
    decode_audio,
    encode_audio,
    ffmpeg_available,
    load_audio,
    probe,
    resample,
    write_audio,
)


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


def expect_error(path: Path, kind: str, cfg: AudioConfig | None = None) -> AudioError:
    with pytest.raises(AudioError) as info:
        load_audio(path, cfg)
    err = info.value
    assert err.kind == kind, str(err)
    assert str(path) in str(err), "message must name the file"
    assert err.path == str(path)
    return err


@pytest.mark.parametrize("ext,subtype", [(".wav", "PCM_16"), (".flac", "PCM_24"), (".ogg", "VORBIS")])
def test_reads_soundfile_formats_at_configured_rate(tmp_path: Path, ext: str, subtype: str) -> None:
    path = tmp_path / f"a{ext}"
    sf.write(path, tone(1.0, 16000), 16000, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == 16000
    ref = tone(1.0, 16000)
    if ext != ".ogg":  # lossless formats reproduce the signal
        assert np.max(np.abs(audio - ref)) < 1e-3
    else:
        assert abs(float(np.std(audio)) - float(np.std(ref))) < 0.02


def test_resamples_to_configured_rate_and_keeps_pitch(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, tone(1.0, 44100, freq=1000.0), 44100)
    audio = load_audio(path, AudioConfig(sample_rate=16000))
    assert audio.shape[0] == 16000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(int(np.argmax(spectrum)) - 1000) <= 1  # 1 Hz bins for a 1-s clip at 16 kHz


def test_resample_identity_and_length() -> None:
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    assert resample(x, 8000, 8000) is x
    assert resample(x, 8000, 16000).shape == (16000,)


def test_downmix_policies(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    data = tone(1.0, 16000, channels=2)  # channel 1 is twice channel 0
    sf.write(path, data, 16000, subtype="FLOAT")
    mean = load_audio(path, AudioConfig(downmix="mean"))
    first = load_audio(path, AudioConfig(downmix="first"))
    np.testing.assert_allclose(mean, data.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(first, data[:, 0], atol=1e-6)
    both = load_audio(path, mono=False)
    assert both.shape == (2, 16000)
    expect_error(path, "too_many_channels", AudioConfig(downmix="error"))


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.wav", "missing")


def test_directory_is_unreadable(tmp_path: Path) -> None:
    d = tmp_path / "dir.wav"
    d.mkdir()
    expect_error(d, "unreadable")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    expect_error(path, "zero_length")
    with pytest.raises(AudioError) as info:
        probe(path)
    assert info.value.kind == "zero_length"


def test_valid_header_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "noframes.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    expect_error(path, "zero_length")


def test_corrupt_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.flac"
    path.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    err = expect_error(path, "unreadable")
    assert "cannot decode" in err.message


def test_truncated_wav_header(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, tone(1.0, 16000), 16000)
    bad = tmp_path / "truncated.wav"
    bad.write_bytes(good.read_bytes()[:20])
    expect_error(bad, "unreadable")


def test_reads_real_mp3(tmp_path: Path) -> None:
    # libsndfile >= 1.1 (bundled with the pinned soundfile wheels) encodes and decodes MPEG layer III itself
    path = tmp_path / "song.mp3"
    sf.write(path, tone(2.0, 16000, freq=440.0), 16000, format="MP3", subtype="MPEG_LAYER_III")
    audio = load_audio(path)
    assert abs(audio.shape[0] - 32000) < 2000  # MP3 frames pad the ends
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.fft.rfftfreq(audio.shape[0], 1 / 16000)[int(np.argmax(spectrum))] - 440.0) < 2.0


def test_undecodable_compressed_files_name_file(tmp_path: Path) -> None:
    # Not real MP3/M4A: soundfile cannot read them and neither can pydub/ffmpeg when it is installed.
    mp3 = tmp_path / "song.mp3"
    mp3.write_bytes(b"ID3" + b"\x00" * 64 + b"garbage" * 100)
    expect_error(mp3, "unreadable")
    m4a = tmp_path / "voice.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"junk" * 50)
    err = expect_error(m4a, "unreadable")
    if not ffmpeg_available():
        assert "install ffmpeg" in err.message


def test_too_short(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, tone(0.1, 16000), 16000)
    err = expect_error(path, "too_short", AudioConfig(min_duration_s=0.5))
    assert "0.100 s" in err.message
    assert load_audio(path, AudioConfig(min_duration_s=0.05)).shape[0] == 1600


def test_nan_and_inf_samples(tmp_path: Path) -> None:
    for bad in (np.nan, np.inf):
        data = tone(1.0, 16000)
        data[100] = bad
        path = tmp_path / f"bad_{bad}.wav"
        sf.write(path, data, 16000, subtype="FLOAT")
        err = expect_error(path, "non_finite")
        assert "1 NaN/Inf" in err.message


def test_digital_silence(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    expect_error(path, "silent")
    assert np.all(load_audio(path, AudioConfig(allow_silent=True)) == 0)
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, tone(1.0, 16000) * 1e-6, 16000, subtype="FLOAT")  # -126 dBFS: below the -90 dBFS floor
    expect_error(quiet, "silent")


@pytest.mark.parametrize("rate", [1, 500, 1_000_000])
def test_absurd_sample_rate(tmp_path: Path, rate: int) -> None:
    path = tmp_path / f"rate{rate}.wav"
    sf.write(path, np.full(max(rate, 100), 0.1, dtype=np.float32), rate)
    err = expect_error(path, "bad_sample_rate")
    assert str(rate) in err.message


def test_too_many_channels(tmp_path: Path) -> None:
    path = tmp_path / "ten.wav"
    sf.write(path, np.full((16000, 10), 0.1, dtype=np.float32), 16000)
    err = expect_error(path, "too_many_channels", AudioConfig(max_channels=8))
    assert "10 channels" in err.message
    assert load_audio(path, AudioConfig(max_channels=10)).shape == (16000,)


def test_error_kinds_are_closed_set(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        AudioError(tmp_path, "something_else", "x")
    assert len(set(ERROR_KINDS)) == len(ERROR_KINDS) == 8


def test_flac_24bit_roundtrip_precision() -> None:
    x = np.random.default_rng(1).uniform(-0.9, 0.9, 16000).astype(np.float32)
    data = encode_audio(x, 16000, "FLAC")
    y, sr = decode_audio(data)
    assert sr == 16000 and y.dtype == np.float32
    assert np.max(np.abs(y - x)) < 2.0**-23  # half an LSB of 24-bit PCM, with margin
    stereo, _ = decode_audio(encode_audio(np.stack([x, -x]), 16000, "WAV"))
    assert stereo.shape == (2, 16000)
    np.testing.assert_array_equal(stereo[0], x)  # WAV defaults to float: exact


def test_pcm_encoding_clips_instead_of_wrapping() -> None:
    x = np.array([1.5, -1.5, 0.25], dtype=np.float32)
    y, _ = decode_audio(encode_audio(x, 16000, "FLAC"))
    assert y[0] > 0.99 and y[1] < -0.99  # no wrap-around to the opposite sign
    assert abs(y[2] - 0.25) < 1e-6


def test_decode_garbage_bytes_names_source() -> None:
    with pytest.raises(AudioError) as info:
        decode_audio(b"not audio", name="shard-000/key.mix.flac")
    assert info.value.kind == "unreadable"
    assert "shard-000/key.mix.flac" in str(info.value)


def test_write_audio_atomic_and_format_by_extension(tmp_path: Path) -> None:
    x = tone(0.6, 16000)
    out = write_audio(tmp_path / "sub" / "a.flac", x, 16000)
    assert out.exists() and sf.info(out).format == "FLAC" and sf.info(out).subtype == "PCM_24"
    wav = write_audio(tmp_path / "a.wav", x, 16000)
    assert sf.info(wav).format == "WAV"
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []  # no temporaries left behind
    with pytest.raises(ValueError, match="a.mp3"):
        write_audio(tmp_path / "a.mp3", x, 16000)
    np.testing.assert_allclose(load_audio(out), x, atol=1e-6)


def test_probe_reads_header(tmp_path: Path) -> None:
    path = tmp_path / "p.flac"
    sf.write(path, tone(1.5, 22050, channels=2), 22050)
    info = probe(path)
    assert (info.sample_rate, info.frames, info.channels) == (22050, int(1.5 * 22050), 2)
    assert abs(info.duration_s - 1.5) < 1e-9
    with pytest.raises(AudioError) as err:
        probe(tmp_path / "absent.flac")
    assert err.value.kind == "missing"


def test_audio_config_rejects_absurd_settings() -> None:
    from pydantic import ValidationError

    for bad in ({"sample_rate": 0}, {"sample_rate": 10_000_000}, {"max_channels": 0}, {"min_duration_s": -1.0}, {"downmix": "sum"}):
        with pytest.raises(ValidationError):
            AudioConfig(**bad)
