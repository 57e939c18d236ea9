"""Tiny dataset layouts built with soundfile for the corpus import tests (ESC-50, FSD50K, AudioSet, folders),
including one file per audio failure mode. Loaded by path from the tests (pytest runs in importlib mode)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
_counter = iter(range(1, 10_000))


def wav(path: Path, seconds: float = 1.0, sr: int = SR, channels: int = 1) -> Path:
    """A distinct (hence not deduplicated) short tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    freq = 200.0 + 37.0 * next(_counter)
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, x if channels == 1 else np.repeat(x[:, None], channels, axis=1), sr)
    return path


def bad_files(folder: Path) -> dict[str, str]:
    """One file per audio failure mode; returns file name -> expected quarantine kind."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 4)
    (folder / "empty.wav").write_bytes(b"")
    wav(folder / "short.wav", seconds=0.1)
    nan = np.full(SR, 0.1, dtype=np.float32)
    nan[10] = np.nan
    sf.write(folder / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(folder / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    sf.write(folder / "rate.wav", np.full(100, 0.1, dtype=np.float32), 1)
    wav(folder / "chans.wav", channels=10)
    return {"missing.wav": "missing", "corrupt.wav": "unreadable", "empty.wav": "zero_length", "short.wav": "too_short",
            "nan.wav": "non_finite", "silent.wav": "silent", "rate.wav": "bad_sample_rate", "chans.wav": "too_many_channels"}


def make_esc50(root: Path) -> dict[str, str]:
    audio = root / "audio"
    wav(audio / "1-100-A-0.wav")
    wav(audio / "4-200-A-1.wav")
    wav(audio / "5-300-A-2.wav")
    shutil.copy(audio / "1-100-A-0.wav", audio / "2-999-A-0.wav")  # same bytes under another name
    expected = bad_files(audio)
    lines = ["filename,fold,target,category,esc10,src_file,take",
             "1-100-A-0.wav,1,0,dog,True,100,A", "4-200-A-1.wav,4,1,crying_baby,False,200,A",
             "5-300-A-2.wav,5,2,church_bells,False,300,A", "2-999-A-0.wav,2,0,dog,True,999,A"]
    lines += [f"{name},3,9,rain,False,1,A" for name in expected]
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return expected


ONTOLOGY = [
    {"id": "/m/0jbk", "name": "Animal", "child_ids": ["/m/068hy"]},
    {"id": "/m/068hy", "name": "Domestic animals, pets", "child_ids": ["/m/0bt9lr"]},
    {"id": "/m/0bt9lr", "name": "Dog", "child_ids": ["/m/05tny_"]},
    {"id": "/m/05tny_", "name": "Bark", "child_ids": []},
    {"id": "/m/04rlf", "name": "Music", "child_ids": ["/m/04szw"]},
    {"id": "/m/04szw", "name": "Musical instrument", "child_ids": ["/m/05r5c"]},
    {"id": "/m/05r5c", "name": "Piano", "child_ids": []},
    {"id": "/m/06mb1", "name": "Rain", "child_ids": []},
    {"id": "/m/09x0r", "name": "Speech", "child_ids": []},
]


def write_ontology(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ONTOLOGY))
    return path


def make_fsd50k(root: Path, with_ontology: bool = True) -> None:
    wav(root / "FSD50K.dev_audio" / "101.wav")
    wav(root / "FSD50K.dev_audio" / "102.wav", seconds=2.0)
    wav(root / "FSD50K.eval_audio" / "201.wav")
    gt = root / "ground_truth"
    gt.mkdir(parents=True)
    (gt / "dev.csv").write_text(
        "fname,labels,mids,split\n"
        '101,"Bark,Dog,Domestic_animals_and_pets,Animal","/m/05tny_,/m/0bt9lr,/m/068hy,/m/0jbk",train\n'
        '102,"Bark,Dog,Animal,Piano,Music","/m/05tny_,/m/0bt9lr,/m/0jbk,/m/05r5c,/m/04rlf",val\n'
        '103,"Rain","/m/06mb1,/m/09x0r",train\n'
    )
    (gt / "eval.csv").write_text('fname,labels,mids\n201,"Rain","/m/06mb1"\n')
    if with_ontology:
        write_ontology(root / "ontology.json")


def make_audioset(root: Path) -> None:
    audio = root / "audio"
    wav(audio / "aaa_30000.wav")  # start in milliseconds
    wav(audio / "bbb.wav")  # plain YTID
    wav(audio / "sub" / "eee_0.wav")  # whole seconds, nested folder
    wav(audio / "Yfff_5.000_15.000.wav")  # "Y" prefix with start and end
    (root).mkdir(parents=True, exist_ok=True)
    (root / "balanced_train_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=4, num_segs=4, num_unique_labels=6, num_positive_labels=9\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        'aaa, 30.000, 40.000, "/m/0bt9lr,/m/0jbk"\n'
        'bbb, 0.000, 10.000, "/m/05tny_,/m/0bt9lr,/m/04rlf,/m/05r5c"\n'
        'ccc, 10.000, 20.000, "/m/06mb1"\n'
        'ddd, 0.000, 10.000, "/m/nonexistent"\n'
        'fff, 5.000, 15.000, "/m/09x0r"\n'
        "truncated-line\n"
    )
    (root / "eval_segments.csv").write_text('# YTID, start_seconds, end_seconds, positive_labels\neee, 0.000, 10.000, "/m/06mb1"\n')
    write_ontology(root / "ontology.json")


def make_folders(root: Path) -> None:
    wav(root / "dog" / "a.wav")
    wav(root / "dog" / "sub" / "b.flac")
    wav(root / "car_horn" / "c.wav")
    (root / "car_horn" / "broken.wav").write_bytes(b"nope")


def _tone(seconds: float, sr: int, freq: float, level: float = 0.2) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_stems(root: Path, sr: int = SR) -> dict[str, str | None]:
    """A `stems` evaluation set: mixture folder -> expected quarantine kind (None = imported).

    song_sum:   MUSDB-style vocals.wav + drums.wav summing exactly to mixture.wav, plus a silent other.wav
    take_bleed: mix.wav + stem_<label>.flac files that miss a bled-in third source ("not the sum")
    bad_length, bad_rate, missing_stem: one failure each (stem too short, stem at another rate, no stem file)
    """
    vocals = _tone(2.0, sr, 330.0)
    drums = np.zeros(int(2.0 * sr), dtype=np.float32)
    drums[sr // 2: sr] = _tone(0.5, sr, 90.0, 0.4)  # sounds from 0.5 s to 1.0 s only
    song = root / "song_sum"
    song.mkdir(parents=True)
    sf.write(song / "vocals.wav", vocals, sr, subtype="FLOAT")
    sf.write(song / "drums.wav", drums, sr, subtype="FLOAT")
    sf.write(song / "other.wav", np.zeros_like(vocals), sr, subtype="FLOAT")
    sf.write(song / "mixture.wav", vocals + drums, sr, subtype="FLOAT")
    (song / "README.txt").write_text("not audio: ignored")

    take = root / "take_bleed"
    take.mkdir()
    a, b, bleed = _tone(1.5, sr, 440.0), _tone(1.5, sr, 660.0), _tone(1.5, sr, 120.0, 0.15)
    sf.write(take / "stem_Door-Knock.flac", a, sr)
    sf.write(take / "stem_alarm_clock.flac", b, sr)
    sf.write(take / "mix.wav", a + b + bleed, sr)  # the bleed is in no stem: residual SDR ~ 5 dB

    short = root / "bad_length"
    short.mkdir()
    sf.write(short / "mixture.wav", _tone(1.0, sr, 500.0), sr)
    sf.write(short / "piano.wav", _tone(0.9, sr, 500.0), sr)

    rate = root / "bad_rate"
    rate.mkdir()
    sf.write(rate / "mixture.wav", _tone(1.0, sr, 700.0), sr)
    sf.write(rate / "bass.wav", _tone(1.0, 22050, 700.0), 22050)

    alone = root / "missing_stem"
    alone.mkdir()
    sf.write(alone / "mixture.wav", _tone(1.0, sr, 800.0), sr)
    return {"song_sum": None, "take_bleed": None, "bad_length": "stem_length_mismatch", "bad_rate": "stem_rate_mismatch",
            "missing_stem": "no_stems"}
