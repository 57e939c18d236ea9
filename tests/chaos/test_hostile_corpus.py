"""Hostile corpus (issue 15 item 2): an import and a run over a dataset holding every bad input this test can make.

The dataset is FSD50K-shaped (tests/flows/test_user_data_run.py's real, synthesised audio: single-label clips
become clean sources, multi-label ones natural scenes) with one metadata row per bad case added to dev.csv:
corrupt bytes, a WAV cut in half, zero bytes, NaN and Inf samples, digital silence, 1 Hz and 1 MHz sample rates,
64 channels, a real 2-hour file, a symlink out of the root, `../` out of the root, a name that is not UTF-8, a
FIFO, a symlink loop, a directory, a missing file, rows with missing and extra fields, a label id the ontology
lacks, a 0.1-s clip, and a byte-for-byte duplicate; plus good clips whose names hold spaces and dots. A small
folders-layout dataset adds the names that come from the disk itself (non-UTF-8 file and class names, spaces, dots,
a symlink out, a truncated FLAC, a FIFO).

Promised and checked: every bad item is quarantined with its kind and a message (manifests/quarantine and
import_report.json), every good one is imported and then processed by `stemforge run` on the tiny preset (every
imported scene of the labelled splits is pseudo-labelled), the run's shard stores pass `shards verify` and every tar
member name is a plain `key.ext` (no path traversal), and the import's memory is bounded: the 2-hour file (quarantined
`too_long` by default; imported when `max_seconds` is null) is streamed, its import's peak RSS measured in a
subprocess (VmHWM reset after start-up, else VmRSS sampled) and held under RSS_BOUND_MIB, well below the 220 MiB its float32 decode alone
would take.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from flows.cli import cli
from pipelines.corpus.config import ImportConfig
from pipelines.corpus.importers import LayoutError, import_reader
from pipelines.corpus.layouts import open_layout
from storage import manifests as mf
from storage.audio import AudioConfig
from storage.shards.writer import validate_key

_spec = importlib.util.spec_from_file_location("user_data_run", Path(__file__).parents[1] / "flows" / "test_user_data_run.py")
ud = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ud)  # type: ignore[union-attr]

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
SR = ud.SR
LONG_SR, LONG_SECONDS = 8000, 2 * 3600  # the 2-hour file: 8 kHz mono PCM_16, 110 MiB on disk, 220 MiB as float32
RSS_BOUND_MIB = 64  # peak RSS growth allowed for importing it (blocks of 64k frames, 1 MiB hash chunks)
# every candidate kept (ITT) so the hostile-looking scene names reach the tier shards' keys
KEEP_ALL = ["filters.pc_enabled=false", "filters.clap_target_enabled=false", "filters.silence_enabled=false",
            "filters.itt_min_db=-1000"]


def _write_long(path: Path) -> None:
    """A real 2-hour WAV written a minute at a time (never held whole)."""
    t = np.arange(60 * LONG_SR) / LONG_SR
    minute = (0.2 * np.sin(2 * np.pi * 220.0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.1 * t))).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=LONG_SR, channels=1, subtype="PCM_16") as fh:
        for _ in range(LONG_SECONDS // 60):
            fh.write(minute)


def _bad_fsd50k(audio: Path, outside: Path, rng: np.random.Generator) -> tuple[list[bytes], dict[str, str]]:
    """Write the bad files into the dev audio folder; return their dev.csv lines and file name -> expected kind."""
    good = ud._sound("Bark", 4.0, rng)
    lines: list[bytes] = []
    expect: dict[str, str] = {}

    def row(fname: bytes, kind: str, labels: bytes = b"Bark", mids: bytes = b"/m/05tny_", raw: bytes | None = None) -> None:
        lines.append(raw if raw is not None else b'%s,"%s","%s",train' % (fname, labels, mids))
        expect[os.fsdecode(fname).rsplit("/", 1)[-1] + ".wav"] = kind

    (audio / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 64)
    row(b"corrupt", "unreadable")
    sf.write(audio / "whole.wav", good, SR, subtype="PCM_16")
    (audio / "truncated.wav").write_bytes((audio / "whole.wav").read_bytes()[:64_000])
    (audio / "whole.wav").unlink()
    row(b"truncated", "truncated")
    (audio / "empty.wav").write_bytes(b"")
    row(b"empty", "zero_length")
    for name, value in ((b"nan", np.nan), (b"inf", np.inf)):
        x = good.copy()
        x[1000:1010] = value
        sf.write(audio / f"{name.decode()}.wav", x, SR, subtype="FLOAT")
        row(name, "non_finite")
    sf.write(audio / "silence.wav", np.zeros(4 * SR, np.float32), SR, subtype="PCM_16")
    row(b"silence", "silent")
    sf.write(audio / "rate1hz.wav", np.full(8, 0.1, np.float32), 1)
    row(b"rate1hz", "bad_sample_rate")
    sf.write(audio / "rate1mhz.wav", np.tile(good[:SR], 63)[:1_000_000], 1_000_000, subtype="PCM_16")
    row(b"rate1mhz", "bad_sample_rate")
    sf.write(audio / "chan64.wav", np.repeat(good[:SR, None], 64, axis=1), SR, subtype="PCM_16")
    row(b"chan64", "too_many_channels")
    sf.write(audio / "short.wav", good[: SR // 10], SR, subtype="PCM_16")
    row(b"short", "too_short")
    _write_long(audio / "twohours.wav")
    row(b"twohours", "too_long")
    sf.write(outside / "real.wav", ud._sound("Meow", 4.0, rng), SR, subtype="PCM_16")
    (audio / "escape.wav").symlink_to(outside / "real.wav")
    row(b"escape", "outside_root")
    sf.write(outside / "dots.wav", ud._sound("Knock", 4.0, rng), SR, subtype="PCM_16")
    row(b"../../outside/dots", "outside_root")  # the row points out of the root
    sf.write(os.fsencode(audio) + b"/bad\xff.wav", ud._sound("Cough", 4.0, rng), SR, subtype="PCM_16")  # bytes path
    row(b"bad\xff", "bad_name")
    os.mkfifo(audio / "fifo.wav")
    row(b"fifo", "unreadable")
    (audio / "loop.wav").symlink_to(audio / "loop.wav")
    row(b"loop", "unreadable")
    (audio / "adir.wav").mkdir()
    row(b"adir", "unreadable")
    row(b"ghost", "missing")
    sf.write(audio / "alien.wav", ud._sound("Thunder", 4.0, rng), SR, subtype="PCM_16")
    row(b"alien", "unknown_label", b"Zorblax", b"/m/zzzzzz")
    row(b"fewer", "bad_metadata", raw=b"fewer,Bark")  # a row with missing fields
    row(b"more", "bad_metadata", raw=b"more,Bark,Meow,/m/05tny_,/m/07qrkrw,train")  # unquoted lists: fields shifted
    return lines, expect


GOOD_ODD_NAMES = {  # fname -> labels: good clips whose names are hostile-looking but legal
    "my clip.v2": [("Bark", "/m/05tny_")],
    "..dots..scene": [("Meow", "/m/07qrkrw"), ("Knock", "/m/07r4wb8")],
    "a b  c": [("Applause", "/m/028ght"), ("Cough", "/m/01b_21")],
}


def _hostile_dataset(base: Path) -> tuple[Path, dict[str, str], set[str]]:
    rng = np.random.default_rng(15)
    root = ud.write_fsd50k(base / "fsd", rng)
    audio = root / "FSD50K.dev_audio"
    outside = base / "outside"
    outside.mkdir()
    lines, expect = _bad_fsd50k(audio, outside, rng)
    for fname, picks in GOOD_ODD_NAMES.items():
        sig = sum(ud._sound(name, 8.0, rng) for name, _ in picks)
        sf.write(audio / f"{fname}.wav", (0.7 * sig).astype(np.float32), SR, subtype="PCM_16")
        lines.append(b'%s,"%s","%s",train' % (fname.encode(), ",".join(n for n, _ in picks).encode(),
                                              ",".join(m for _, m in picks).encode()))
    (audio / "copy.wav").write_bytes((audio / "1.wav").read_bytes())  # same bytes as clip 1: a duplicate
    lines.append(b'copy,"Bark","/m/05tny_",train')
    with open(root / "ground_truth" / "dev.csv", "ab") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    good = {f"fsd50k:{r['fname']}" for r in _csv_rows(root)} - {f"fsd50k:{Path(n).stem}" for n in expect} \
        - {"fsd50k:copy", "fsd50k:../../outside/dots", "fsd50k:bad\udcff"}
    return root, expect, good


def _csv_rows(root: Path) -> list[dict]:
    out = []
    for name in ("dev.csv", "eval.csv"):
        with open(root / "ground_truth" / name, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            out += list(csv.DictReader(fh))
    return out


_MEASURE = r"""
import json, resource, sys, threading, time
from pathlib import Path
from pipelines.corpus.config import ImportConfig
from pipelines.corpus.importers import import_reader
from pipelines.corpus.layouts import open_layout
from storage.audio import AudioConfig

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

def measured(layout, root, out, cfg):
    try:  # reset the high-water mark so VmHWM measures this import, not start-up
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:  # not permitted here: fall back on sampling VmRSS every 5 ms
        reset = False
    base, polled, done = vm("VmRSS:"), [vm("VmRSS:")], threading.Event()
    def poll():
        while not done.wait(0.005):
            polled.append(vm("VmRSS:"))
    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    report = import_reader(open_layout(layout, root, cfg), out, root=root, audio_cfg=AudioConfig(), import_cfg=cfg)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak = vm("VmHWM:") if reset else max(polled)
    return {"seconds": round(seconds, 2), "rss_before_kib": base, "peak_kib": peak, "hwm_reset": reset,
            "imported": report.imported, "quarantined": report.quarantined}

hostile, long_root, out = sys.argv[1:4]
result = {"hostile": measured("fsd50k", hostile, out + "/hostile", ImportConfig()),
          "long": measured("folders", long_root, out + "/long", ImportConfig(max_seconds=None)),
          "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The hostile import (and the 2-hour file's streamed import) in a subprocess whose peak RSS is measured."""
    base = tmp_path_factory.mktemp("hostile")
    root, expect, good = _hostile_dataset(base)
    long_root = base / "long"
    (long_root / "drone").mkdir(parents=True)
    os.link(root / "FSD50K.dev_audio" / "twohours.wav", long_root / "drone" / "twohours.wav")  # no second copy
    out = base / "corpora"
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(root), str(long_root), str(out)], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    (root / "FSD50K.dev_audio" / "twohours.wav").unlink()  # 110 MiB: gone once imported (the manifests keep its row)
    (long_root / "drone" / "twohours.wav").unlink()
    print("hostile import figures:", json.dumps(figures))
    return {"root": root, "out": out / "hostile", "long_out": out / "long", "expect": expect, "good": good,
            "figures": figures}


def test_every_bad_item_is_quarantined_with_its_reason(imported) -> None:
    out, expect = imported["out"], imported["expect"]
    report = json.loads((out / "import_report.json").read_text())
    counts = report["counts"]
    assert counts["quarantined_by_kind"] == dict(sorted(Counter(expect.values()).items()))
    assert counts["duplicate"] == 1
    rows = list(mf.iter_rows(out / "manifests" / "quarantine", expect="quarantine"))
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == len(expect)
    assert {name: r["error_kind"] for name, r in by_name.items()} == {mf.storable_text(n): k for n, k in expect.items()}
    for r in rows:
        assert r["stage"] == "import" and r["message"], r
    assert "bad\\xff.wav" in by_name  # the non-UTF-8 name is stored escaped, and still names the file
    assert "not valid UTF-8" in by_name["bad\\xff.wav"]["message"]
    assert "outside the dataset root" in by_name["escape.wav"]["message"]
    assert by_name["dots.wav"]["path"].endswith("FSD50K.dev_audio/../../outside/dots.wav")  # as the row gives it
    assert f"resolves to {imported['root'].parent / 'outside' / 'dots.wav'}, outside" in by_name["dots.wav"]["message"]
    assert "Symlink loop" in by_name["loop.wav"]["message"]
    assert "not decoded" in by_name["twohours.wav"]["message"] and "7200.0 s" in by_name["twohours.wav"]["message"]
    assert "field(s) more than the header" in by_name["more.wav"]["message"]
    assert "missing field(s)" in by_name["fewer.wav"]["message"]
    assert "/m/zzzzzz" in by_name["alien.wav"]["message"]
    assert "only 63956 are in the file" in by_name["truncated.wav"]["message"]
    assert "not a regular file" in by_name["fifo.wav"]["message"]


def test_every_good_item_is_imported_with_safe_columns(imported) -> None:
    out = imported["out"]
    got = {r["clip_id"]: r for pool in ("sources", "scenes") for r in mf.iter_rows(out / "manifests" / pool)}
    assert set(got) == imported["good"]
    root = str(imported["root"])
    for clip_id, r in got.items():
        assert r["path"].startswith(root + "/") and Path(r["path"]).is_file(), r["path"]
        assert r["duration_s"] == r["num_frames"] / r["sample_rate"] and r["active_start_s"] is not None
    assert got["fsd50k:..dots..scene"]["event_labels"] == ["meow", "knock"]
    assert got["fsd50k:my clip.v2"]["labels"] == ["bark"]
    # the streamed scan records what a whole decode would: frames and the active span of load_audio's mono signal
    from pipelines.mixing.loudness import active_span
    from storage.audio import load_audio

    r = got["fsd50k:..dots..scene"]
    audio = load_audio(r["path"], AudioConfig(sample_rate=r["sample_rate"]))
    assert audio.shape[-1] == r["num_frames"]
    assert active_span(audio, r["sample_rate"]) == (r["active_start_s"], r["active_end_s"])


def test_two_hour_file_is_streamed_with_bounded_memory(imported) -> None:
    figures = imported["figures"]
    long = list(mf.iter_rows(imported["long_out"] / "manifests" / "sources"))
    assert [r["num_frames"] for r in long] == [LONG_SR * LONG_SECONDS] and long[0]["duration_s"] == LONG_SECONDS
    decoded_mib = LONG_SR * LONG_SECONDS * 4 / 2**20  # what a whole float32 decode would hold
    for part in ("long", "hostile"):
        grew_mib = (figures[part]["peak_kib"] - figures[part]["rss_before_kib"]) / 1024
        assert grew_mib < RSS_BOUND_MIB < decoded_mib, (part, figures)


def test_folders_layout_names_from_the_disk(tmp_path) -> None:
    """Names the file system hands over: non-UTF-8 bytes (file and class folder), spaces, dots, a hidden file, a
    symlink out of the root, a truncated FLAC, a FIFO."""
    rng = np.random.default_rng(3)
    root, outside = tmp_path / "mine", tmp_path / "elsewhere"
    for d in (root / "dog", root / os.fsdecode(b"caf\xe9"), outside):
        d.mkdir(parents=True)

    def put(path: Path, name: str = "Bark") -> Path:
        sf.write(os.fsencode(path), ud._sound(name, 2.0, rng), SR, subtype="PCM_16")  # soundfile: str must be UTF-8
        return path

    put(root / "dog" / os.fsdecode(b"bad\xff.wav"))
    put(root / os.fsdecode(b"caf\xe9") / "ok.wav")
    put(root / "dog" / "my file.wav")
    put(root / "dog" / "a..b.c.wav")
    put(root / "dog" / ".hidden.wav")
    (root / "dog" / "escape.wav").symlink_to(put(outside / "far.wav", "Meow"))
    flac = put(tmp_path / "whole.flac")
    (root / "dog" / "cut.flac").write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    os.mkfifo(root / "dog" / "fifo.wav")

    def run(cfg: ImportConfig, out: Path):
        reader = open_layout("folders", root, cfg)
        return import_reader(reader, out, root=root, audio_cfg=AudioConfig(), import_cfg=cfg), out

    report, out = run(ImportConfig(), tmp_path / "out")
    assert report.candidates == 7  # the hidden file is not a candidate
    assert dict(report.quarantined_by_kind) == {"bad_name": 2, "outside_root": 1, "truncated": 1, "unreadable": 1}
    kinds = {Path(r["path"]).name: r["error_kind"] for r in mf.iter_rows(out / "manifests" / "quarantine")}
    assert kinds == {"bad\\xff.wav": "bad_name", "ok.wav": "bad_name", "escape.wav": "outside_root",
                     "cut.flac": "truncated", "fifo.wav": "unreadable"}
    assert {r["clip_id"] for r in mf.iter_rows(out / "manifests" / "sources")} == {"mine:dog/my file.wav", "mine:dog/a..b.c.wav"}
    again, _ = run(ImportConfig(), tmp_path / "out")  # a re-import dedupes and adds no second quarantine row
    assert again.duplicate == 2 and mf.count_rows(out / "manifests" / "quarantine") == 5
    opened, out2 = run(ImportConfig(allow_outside_root=True), tmp_path / "out2")  # the opt-in follows the symlink
    far = [r for r in mf.iter_rows(out2 / "manifests" / "sources") if r["clip_id"] == "mine:dog/escape.wav"]
    assert opened.imported == 3 and far[0]["path"] == str((outside / "far.wav").resolve())


def test_csv_without_a_required_column_stops_with_the_file_and_column(tmp_path) -> None:
    gt = tmp_path / "fsd" / "ground_truth"
    gt.mkdir(parents=True)
    (tmp_path / "fsd" / "FSD50K.dev_audio").mkdir()
    (gt / "dev.csv").write_text("fname,labels,split\n1,Bark,train\n")
    with pytest.raises(LayoutError, match=rf"{gt / 'dev.csv'}: missing column\(s\) \['mids'\]"):
        open_layout("fsd50k", tmp_path / "fsd", ImportConfig())


@pytest.mark.timeout(900)
def test_run_over_the_hostile_corpus_completes_and_its_shards_verify(imported, tmp_path) -> None:
    out = imported["out"]
    t0 = time.perf_counter()
    sets = ["engine.backend=inprocess", "corpus.kind=manifests", f"corpus.data.path={out}", "engine.final.enabled=false",
            *KEEP_ALL]
    res = CliRunner().invoke(cli, ["run", "--config", TINY, *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path),
                                   "--name", "hostile"], catch_exceptions=False)
    assert res.exit_code == 0, res.output[-3000:]
    print(f"hostile run: {time.perf_counter() - t0:.1f} s")
    run = tmp_path / "hostile"
    # every imported scene of the labelled splits was pseudo-labelled (the hostile-looking names included)
    from pipelines.filters.table import read_table_parts

    scenes = {r["clip_id"]: r["split"] for r in mf.iter_rows(out / "manifests" / "scenes")}
    table = read_table_parts(run / "iter0" / "filter" / "table").to_pylist()
    train = {s for s, split in scenes.items() if split == "train"}  # engine.pseudo_label_splits: [train]
    assert {r["scene_id"] for r in table} == train and {"fsd50k:..dots..scene", "fsd50k:a b  c"} <= train
    # ... and their tracks reached the tier shards (KEEP_ALL), under keys the writer accepts
    kept = {r["candidate_id"] for r in table if r["keep"]}
    assert {"fsd50k:..dots..scene-q00", "fsd50k:a b  c-q00"} <= kept
    tiers = json.loads((run / "steps" / "tiers_0.json").read_text())["outputs"]
    assert tiers["itt"]["count"] == len(kept), tiers
    stores = sorted(p.parent for p in run.rglob("_SUCCESS") if (p.parent / "manifest.json").is_file()
                    and json.loads((p.parent / "manifest.json").read_text())["num_samples"] > 0)  # verify: 3 when empty
    assert any("synthetic" in str(s) for s in stores) and run / "iter0" / "tiers" / "itt" in stores, stores
    for store in stores:
        verify = CliRunner().invoke(cli, ["shards", "verify", str(store), "--quiet"])
        assert verify.exit_code == 0, (store, verify.output)
        for tar in store.rglob("*.tar"):
            with tarfile.open(tar) as tf:
                for name in tf.getnames():
                    key, _, ext = name.partition(".")
                    validate_key(key)  # no slash, dot, whitespace or control character: no path traversal
                    assert ext and not name.startswith("/") and ".." not in name, (tar, name)
    # the tier samples still name their candidates (json "key"), whatever the shard key had to become
    from storage.shards.reader import iter_raw_samples, list_shards

    named = {json.loads(raw["json"])["key"] for shard in list_shards(run / "iter0" / "tiers" / "itt")
             for raw in iter_raw_samples(shard)}
    assert named == kept
