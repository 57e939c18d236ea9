"""Mixing throughput: stemforge's PromptSep-style recipe against Scaper rendering an equivalent spec, same run.

Equivalent spec (both tools): mixtures of `--duration` seconds (default 10, as in Scaper's published figure of
100 ten-second soundscapes), 2-5 foreground events of distinct labels, event durations U[1, 4] s, event SNR
U[-3, 10] dB, reference level -25 dB, no pitch/time augmentation; every tuple written to disk with its stems
(stemforge: target/residual/mixture as 24-bit FLAC in tar shards + JSON spec + spans; Scaper: mixture + isolated
event WAVs + JAMS). Both run in one process on one core. Scaper runs in its own venv (bench/setup_scaper.sh).

Rows: (1) stemforge end to end into the shard store (the headline: what `stemforge mix` produces), (2) stemforge
writing the same kind of output as Scaper (mixture + stems as 32-bit WAV files + a JSON spec per tuple, plain files,
no shards: apples to apples), (3) stemforge rendering only (no encoding, no disk, cold clip cache), (4) Scaper,
(4b) Scaper rendering only (`generate(None, None)`: mixture and event arrays in memory, nothing written; compared
with row 3); and (1b) the shard path with `--threads-row N` encode threads per tuple (same bytes, but more than one
core: not the headline).

Reported: tuples per second, x real time (seconds of mixture audio produced per wall-clock second), the ratio, the
CPU seconds each tool used (process plus children: Scaper runs sox; robust to the load of a shared machine), and
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
sys.path.insert(0, str(REPO / "tests" / "fixtures"))  # toy_sources (test fixture, not library code)

SCAPER_SCRIPT = r'''
import json, sys, time, glob, os, warnings
import numpy as np, soundfile as sf, scaper
warnings.filterwarnings("ignore")
fg, bg, out, num, duration, seed, check = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
in_memory = len(sys.argv) > 8 and sys.argv[8] == "memory"
errors = []
rng = np.random.default_rng(seed)
cpu0 = os.times()
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
    if in_memory:  # render only: mixture and isolated events returned as arrays, nothing written
        mix, _, _, events = sc.generate(None, None, allow_repeated_label=False, save_isolated_events=False,
                                        disable_sox_warnings=True, disable_instantiation_warnings=True)
        if i < check:
            errors.append(float(np.max(np.abs(mix - sum(events)))))
        continue
    sc.generate(base + ".wav", base + ".jams", allow_repeated_label=False, save_isolated_events=True,
                isolated_events_path=base + "_events", disable_sox_warnings=True, disable_instantiation_warnings=True)
elapsed = time.perf_counter() - start
cpu1 = os.times()
cpu = sum(cpu1[k] - cpu0[k] for k in range(4))  # user + sys, own and sox children
for i in range(0 if in_memory else min(check, num)):
    base = os.path.join(out, f"sc{i:05d}")
    mix, _ = sf.read(base + ".wav", dtype="float64")
    events = sorted(glob.glob(os.path.join(base + "_events", "*.wav")))
    total = sum(sf.read(e, dtype="float64")[0] for e in events)
    errors.append(float(np.max(np.abs(mix - total))))
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "num": num, "sum_error_max": max(errors) if errors else None,
                  "sum_error_median": float(np.median(errors)) if errors else None, "scaper": scaper.__version__}))
'''


def prepare_sources(out: Path, sources: str | None, seconds: float) -> Path:
    from toy_sources import write_toy_sources

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


def bench_config(duration: float, encode_threads: int = 1):
    from pipelines.mixing.config import MixingConfig

    return MixingConfig(recipe="promptsep", duration_s=duration, max_uses_per_epoch=0, encode_threads=encode_threads,
                        loudness={"ref_level_db": -25.0},
                        promptsep={"num_events": ["randint", 2, 5], "snr_db": ["uniform", -3.0, 10.0],
                                   "event_seconds": ["uniform", 1.0, 4.0]})


def make_factory(manifest: Path, num: int, duration: float, seed: int, sample_rate: int, encode_threads: int = 1):
    """A fresh factory (cold clip cache) with its specs planned: planning is part of neither tool's render loop."""
    from pipelines.mixing.job import MixSampleFactory
    from storage.audio import AudioConfig

    factory = MixSampleFactory(bench_config(duration, encode_threads), seed, manifest, audio_cfg=AudioConfig(sample_rate=sample_rate))
    factory.stage.setup()
    factory.stage.planner.spec(num - 1)
    return factory


def run_stemforge(manifest: Path, out: Path, num: int, duration: float, seed: int, sample_rate: int,
                  encode_threads: int = 1, render_only: bool = True) -> dict:
    from storage.audio import decode_audio
    from storage.shards.config import ShardConfig
    from storage.shards.store import write_store

    factory = make_factory(manifest, num, duration, seed, sample_rate, encode_threads)
    if out.exists():
        shutil.rmtree(out)
    cpu0 = time.process_time()
    start = time.perf_counter()
    manifest_json = write_store(out, factory, num, ShardConfig(max_count=64))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
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

    # a fresh factory: cold clip cache, like Scaper's in-memory row, which reads every event's file
    stage = make_factory(manifest, num, duration, seed, sample_rate).stage if render_only else factory.stage
    t0 = time.perf_counter()
    for i in range(num if render_only else 0):
        render(stage.planner.spec(i), stage.cache, stage.cfg.spans)
    render_s = time.perf_counter() - t0 if render_only else None
    return {"seconds": elapsed, "cpu_seconds": cpu, "num": manifest_json["num_samples"], "render_only_seconds": render_s,
            "sum_error_max": max(errors), "sum_error_median": float(np.median(errors)), "dropped": manifest_json["num_dropped"]}


def run_stemforge_wav(manifest: Path, out: Path, num: int, duration: float, seed: int, sample_rate: int) -> dict:
    """Apples to apples with Scaper's output: per tuple `<key>.wav` (mixture), `<key>_target.wav`,
    `<key>_residual.wav` (32-bit PCM WAV, as Scaper writes) and `<key>.json` (the sample JSON with the full spec,
    in place of Scaper's JAMS); plain file writes like Scaper's, no tar/index/fsync."""
    from pipelines.mixing.render import RenderError, render, sample_json
    from storage.audio import AudioError

    factory = make_factory(manifest, num, duration, seed, sample_rate)
    stage = factory.stage
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    for i in range(num):
        spec = stage.planner.spec(i)
        try:
            t = render(spec, stage.cache, stage.cfg.spans)
        except (RenderError, AudioError):
            continue
        base = out / spec.key
        for suffix, audio in (("", t.mixture), ("_target", t.target), ("_residual", t.residual)):
            sf.write(f"{base}{suffix}.wav", audio, sample_rate, subtype="PCM_32")
        (out / f"{spec.key}.json").write_text(json.dumps(sample_json(t, stage.config_hash)))
        written += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    errors = []
    for i in range(min(20, num)):
        base = out / stage.planner.spec(i).key
        if not Path(f"{base}.wav").exists():
            continue
        mix = sf.read(f"{base}.wav", dtype="float64")[0]
        stems = sf.read(f"{base}_target.wav", dtype="float64")[0] + sf.read(f"{base}_residual.wav", dtype="float64")[0]
        errors.append(float(np.max(np.abs(mix - stems))))
    return {"seconds": elapsed, "cpu_seconds": cpu, "num": written, "sum_error_max": max(errors),
            "sum_error_median": float(np.median(errors))}


def run_scaper(python: Path, fg: Path, bg: Path, out: Path, num: int, duration: float, seed: int, sample_rate: int,
               in_memory: bool = False) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ, BENCH_SR=str(sample_rate), OMP_NUM_THREADS="1")
    proc = subprocess.run([str(python), "-c", SCAPER_SCRIPT, str(fg), str(bg), str(out), str(num), str(duration), str(seed), "20",
                           "memory" if in_memory else "files"],
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
    ap.add_argument("--threads-row", type=int, default=3, help="also time the shard path with this many encode threads (<=1: skip)")
    ap.add_argument("--skip-wav", action="store_true", help="skip the stemforge WAV-files row")
    ap.add_argument("--repeat", type=int, default=3, help="alternate the rows this many times; the best run of each counts")
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
    ours_runs, thr_runs, wav_runs, theirs_runs, theirs_mem_runs = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_scaper:
            fg, bg = scaper_layout(manifest, args.split, Path(tmp) / "scaper_src", args.sample_rate)
        for _ in range(max(1, args.repeat)):  # alternate so all rows see the same machine load
            ours_runs.append(run_stemforge(manifest, out / "stemforge", args.num, args.duration, args.seed, args.sample_rate))
            if args.threads_row > 1:
                thr_runs.append(run_stemforge(manifest, out / "stemforge_threads", args.num, args.duration, args.seed,
                                              args.sample_rate, encode_threads=args.threads_row, render_only=False))
            if not args.skip_wav:
                wav_runs.append(run_stemforge_wav(manifest, out / "stemforge_wav", args.num, args.duration, args.seed, args.sample_rate))
            if not args.skip_scaper:
                theirs_runs.append(run_scaper(python, fg, bg, out / "scaper", args.num, args.duration, args.seed, args.sample_rate))
                theirs_mem_runs.append(run_scaper(python, fg, bg, out / "scaper_mem", args.num, args.duration, args.seed,
                                                  args.sample_rate, in_memory=True))

    def best(runs: list[dict], key: str) -> float:
        return min(r[key] for r in runs)

    def line(label: str, runs: list[dict]) -> str:
        sec, cpu = best(runs, "seconds"), best(runs, "cpu_seconds")
        return (f"{label}: {runs[0]['num']} tuples in {sec:.2f} s (cpu {cpu:.2f} s) = {args.num / sec:.1f} tuples/s, "
                f"{audio_s / sec:.0f}x real time; sum error max {runs[0]['sum_error_max']:.2e}")

    ours = min(ours_runs, key=lambda r: r["seconds"])
    results = {"num": args.num, "duration_s": args.duration, "sample_rate": args.sample_rate, "repeat": args.repeat,
               "stemforge": ours, "stemforge_all_seconds": [r["seconds"] for r in ours_runs],
               "stemforge_all_cpu_seconds": [r["cpu_seconds"] for r in ours_runs]}
    print(line("stemforge shards (FLAC 24-bit tar + index)", ours_runs)
          + f"; render only {audio_s / best(ours_runs, 'render_only_seconds'):.0f}x real time")
    if thr_runs:
        results["stemforge_threads"] = min(thr_runs, key=lambda r: r["seconds"])
        results["stemforge_threads_all_seconds"] = [r["seconds"] for r in thr_runs]
        print(line(f"stemforge shards, encode_threads={args.threads_row} (not one core)", thr_runs))
    if wav_runs:
        results["stemforge_wav"] = min(wav_runs, key=lambda r: r["seconds"])
        results["stemforge_wav_all_seconds"] = [r["seconds"] for r in wav_runs]
        print(line("stemforge WAV files (as Scaper writes)", wav_runs))
    if theirs_runs:
        theirs = min(theirs_runs, key=lambda r: r["seconds"])
        results["scaper"] = theirs
        results["scaper_all_seconds"] = [r["seconds"] for r in theirs_runs]
        results["scaper_all_cpu_seconds"] = [r["cpu_seconds"] for r in theirs_runs]
        print(line(f"scaper {theirs['scaper']} (WAV files)", theirs_runs))
        ratio = best(theirs_runs, "seconds") / best(ours_runs, "seconds")
        results["speedup"] = ratio
        results["speedup_cpu"] = best(theirs_runs, "cpu_seconds") / best(ours_runs, "cpu_seconds")
        print(f"speedup stemforge shards / scaper: {ratio:.1f}x wall, {results['speedup_cpu']:.1f}x cpu (goal >= 10x)")
        if thr_runs:
            results["speedup_threads"] = best(theirs_runs, "seconds") / best(thr_runs, "seconds")
            print(f"speedup stemforge shards with {args.threads_row} encode threads / scaper: {results['speedup_threads']:.1f}x wall")
        if wav_runs:
            results["speedup_wav"] = best(theirs_runs, "seconds") / best(wav_runs, "seconds")
            results["speedup_wav_cpu"] = best(theirs_runs, "cpu_seconds") / best(wav_runs, "cpu_seconds")
            print(f"speedup stemforge WAV / scaper (apples to apples): {results['speedup_wav']:.1f}x wall, "
                  f"{results['speedup_wav_cpu']:.1f}x cpu")
    if theirs_mem_runs:
        results["scaper_render_only"] = min(theirs_mem_runs, key=lambda r: r["seconds"])
        mem_s, ours_render_s = best(theirs_mem_runs, "seconds"), best(ours_runs, "render_only_seconds")
        results["speedup_render_only"] = mem_s / ours_render_s
        print(f"render only (in memory, nothing written; cold clip cache): stemforge {ours_render_s:.2f} s, "
              f"scaper {mem_s:.2f} s (cpu {best(theirs_mem_runs, 'cpu_seconds'):.2f} s; sum error max "
              f"{results['scaper_render_only']['sum_error_max']:.2e}) = {results['speedup_render_only']:.1f}x")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
