"""Mixing throughput: stemforge's PromptSep-style recipe against Scaper rendering an equivalent spec, same run.

Equivalent spec (both tools): mixtures of `--duration` seconds (default 10, as in Scaper's published figure of
100 ten-second soundscapes), 2-5 foreground events of distinct labels, event durations U[1, 4] s, event SNR
U[-3, 10] dB, reference level -25 dB, no pitch/time augmentation; every tuple written to disk with its stems
(stemforge: target/residual/mixture as 24-bit FLAC in tar shards + JSON spec + spans; Scaper: mixture + isolated
event WAVs + JAMS). Both run in one process on one core. Scaper runs in its own venv (bench/setup_scaper.sh).

Reported: tuples per second, x real time (seconds of mixture audio produced per wall-clock second), the ratio, and
the sum error max|mixture - sum(stems)| of each tool's files (Scaper's users report its stems do not sum to the mix).

    .venv/bin/python bench/bench_mixing.py --num 100            # after: bash bench/setup_scaper.sh
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCAPER_SCRIPT = r'''
import json, sys, time, glob, os, warnings
import numpy as np, soundfile as sf, scaper
warnings.filterwarnings("ignore")
fg, bg, out, num, duration, seed, check = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
rng = np.random.default_rng(seed)
start = time.perf_counter()
for i in range(num):
    sc = scaper.Scaper(duration, fg, bg, random_state=seed * 100003 + i)
    sc.ref_db = -25
    sc.sr = int(os.environ.get("BENCH_SR", "16000"))
    for _ in range(int(rng.integers(2, 6))):
        sc.add_event(label=("choose", []), source_file=("choose", []), source_time=("const", 0),
                     event_time=("uniform", 0, duration - 4.0), event_duration=("uniform", 1.0, 4.0),
                     snr=("uniform", -3, 10), pitch_shift=None, time_stretch=None)
    base = os.path.join(out, f"sc{i:05d}")
    sc.generate(base + ".wav", base + ".jams", allow_repeated_label=False, save_isolated_events=True,
                isolated_events_path=base + "_events", disable_sox_warnings=True, disable_instantiation_warnings=True)
elapsed = time.perf_counter() - start
errors = []
for i in range(min(check, num)):
    base = os.path.join(out, f"sc{i:05d}")
    mix, _ = sf.read(base + ".wav", dtype="float64")
    events = sorted(glob.glob(os.path.join(base + "_events", "*.wav")))
    total = sum(sf.read(e, dtype="float64")[0] for e in events)
    errors.append(float(np.max(np.abs(mix - total))))
print(json.dumps({"seconds": elapsed, "num": num, "sum_error_max": max(errors) if errors else None,
                  "sum_error_median": float(np.median(errors)) if errors else None, "scaper": scaper.__version__}))
'''


def prepare_sources(out: Path, sources: str | None, seconds: float) -> Path:
    from pipelines.mixing.toy import write_toy_sources

    if sources:
        return Path(sources)
    return write_toy_sources(out / "toy", per_class=4, seconds=seconds)


def scaper_layout(manifest: Path, split: str, root: Path, sample_rate: int) -> tuple[Path, Path]:
    """foreground/<label>/<clip>.wav (WAV copies at the bench rate) and an empty background/ folder."""
    from storage.audio import AudioConfig, load_audio
    from storage.manifests import iter_rows

    fg, bg = root / "foreground", root / "background" / "none"
    bg.mkdir(parents=True, exist_ok=True)
    for row in iter_rows(manifest, expect="source_clip"):
        if row["split"] != split:
            continue
        label = row["labels"][0].replace(" ", "_")
        dest = fg / label / f"{row['clip_id']}.wav"
        dest.parent.mkdir(parents=True, exist_ok=True)
        sf.write(dest, load_audio(row["path"], AudioConfig(sample_rate=sample_rate)), sample_rate, subtype="PCM_24")
    return fg, bg.parent


def run_stemforge(manifest: Path, out: Path, num: int, duration: float, seed: int, sample_rate: int) -> dict:
    from pipelines.mixing.config import MixingConfig
    from pipelines.mixing.job import MixSampleFactory
    from storage.audio import AudioConfig, decode_audio
    from storage.shards.config import ShardConfig
    from storage.shards.store import write_store

    cfg = MixingConfig(recipe="promptsep", duration_s=duration, max_uses_per_epoch=0,
                       loudness={"ref_level_db": -25.0},
                       promptsep={"num_events": ["randint", 2, 5], "snr_db": ["uniform", -3.0, 10.0],
                                  "event_seconds": ["uniform", 1.0, 4.0]})
    factory = MixSampleFactory(cfg, seed, manifest, audio_cfg=AudioConfig(sample_rate=sample_rate))
    factory.stage.setup()
    factory.stage.planner.spec(num - 1)  # planning is part of neither tool's render loop
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    manifest_json = write_store(out, factory, num, ShardConfig(max_count=64))
    elapsed = time.perf_counter() - start
    # sum error from the stored files
    from storage.shards.index import read_index, read_member

    errors = []
    for row in read_index(out).to_pylist()[:20]:
        mix = decode_audio(read_member(out, row, "mix.flac"))[0].astype(np.float64)
        tgt = decode_audio(read_member(out, row, "target.flac"))[0]
        res = decode_audio(read_member(out, row, "residual.flac"))[0] if any(m.endswith("residual.flac") for m in row["members"]) else 0.0
        errors.append(float(np.max(np.abs(mix - tgt - res))))
    # render-only timing (no encoding, no disk) for the breakdown
    from pipelines.mixing.render import render

    stage = factory.stage
    t0 = time.perf_counter()
    for i in range(num):
        render(stage.planner.spec(i), stage.cache, cfg.spans)
    render_s = time.perf_counter() - t0
    return {"seconds": elapsed, "num": manifest_json["num_samples"], "render_only_seconds": render_s,
            "sum_error_max": max(errors), "sum_error_median": float(np.median(errors)), "errors": factory.errors[:5]}


def run_scaper(python: Path, fg: Path, bg: Path, out: Path, num: int, duration: float, seed: int, sample_rate: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ, BENCH_SR=str(sample_rate), OMP_NUM_THREADS="1")
    proc = subprocess.run([str(python), "-c", SCAPER_SCRIPT, str(fg), str(bg), str(out), str(num), str(duration), str(seed), "20"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"Scaper run failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--sources", default=None, help="source_clip manifest (default: a toy pool of 6-s clips)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--scaper-python", default=str(REPO / "bench" / ".venv-scaper" / "bin" / "python"))
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "mixing"))
    ap.add_argument("--skip-scaper", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="alternate the tools this many times; the best run of each counts")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = prepare_sources(out, args.sources, seconds=6.0)
    audio_s = args.num * args.duration
    python = Path(args.scaper_python)
    if not args.skip_scaper and not python.exists():
        print(f"Scaper venv missing ({python}); run bash bench/setup_scaper.sh", file=sys.stderr)
        return 2
    ours_runs, theirs_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_scaper:
            fg, bg = scaper_layout(manifest, args.split, Path(tmp) / "scaper_src", args.sample_rate)
        for _ in range(max(1, args.repeat)):  # alternate so both tools see the same machine load
            ours_runs.append(run_stemforge(manifest, out / "stemforge", args.num, args.duration, args.seed, args.sample_rate))
            if not args.skip_scaper:
                theirs_runs.append(run_scaper(python, fg, bg, out / "scaper", args.num, args.duration, args.seed, args.sample_rate))
    ours = min(ours_runs, key=lambda r: r["seconds"])
    results = {"num": args.num, "duration_s": args.duration, "sample_rate": args.sample_rate, "repeat": args.repeat,
               "stemforge": ours, "stemforge_all_seconds": [r["seconds"] for r in ours_runs]}
    print(f"stemforge: {ours['num']} tuples in {ours['seconds']:.2f} s = {args.num / ours['seconds']:.1f} tuples/s, "
          f"{audio_s / ours['seconds']:.0f}x real time (render only {audio_s / ours['render_only_seconds']:.0f}x); "
          f"sum error max {ours['sum_error_max']:.2e}")
    if theirs_runs:
        theirs = min(theirs_runs, key=lambda r: r["seconds"])
        results["scaper"] = theirs
        results["scaper_all_seconds"] = [r["seconds"] for r in theirs_runs]
        ratio = theirs["seconds"] / ours["seconds"]
        results["speedup"] = ratio
        print(f"scaper {theirs['scaper']}: {args.num} soundscapes in {theirs['seconds']:.2f} s = "
              f"{args.num / theirs['seconds']:.1f} tuples/s, {audio_s / theirs['seconds']:.0f}x real time; "
              f"sum error max {theirs['sum_error_max']:.2e}")
        print(f"speedup stemforge / scaper: {ratio:.1f}x (goal >= 10x)")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
