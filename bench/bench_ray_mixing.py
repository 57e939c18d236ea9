"""Synthetic mixing into shards through Ray tasks: 2 workers vs 1, same run, same local Ray instance.

What is timed: `engine.shard_jobs.write_store_job` of `--num` PromptSep tuples (2-5 events, `--duration` s, toy
source pool from tests/fixtures) into a fresh store, one Ray task per shard group (`--max-count` tuples each), with
`workers` tasks in flight. Ray start-up is excluded (one `ray.init(num_cpus=2)` for the whole bench) and a short
warm-up run starts both worker processes first, so the ratio is the parallel speed-up of the shard jobs themselves
(goal >= 1.7x on 2 cores). The two stores are checked byte-identical. Figures are noisy on a shared machine: run it
on an idle one for the headline, and look at `--repeat` medians.

    .venv/bin/python bench/bench_ray_mixing.py --num 256
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))  # toy_sources (test fixture, not library code)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _config(duration: float):
    from pipelines.mixing.config import MixingConfig

    return MixingConfig(recipe="promptsep", duration_s=duration, max_uses_per_epoch=0,
                        loudness={"ref_level_db": -25.0},
                        promptsep={"num_events": ["randint", 2, 5], "snr_db": ["uniform", -3.0, 10.0],
                                   "event_seconds": ["uniform", 1.0, 4.0]})


def _run(out: Path, manifest: Path, num: int, duration: float, max_count: int, workers: int, seed: int) -> float:
    from engine.shard_jobs import StoreJob, mix_factory_spec, write_store_job
    from storage.audio import AudioConfig
    from storage.shards.config import ShardConfig

    if out.exists():
        shutil.rmtree(out)
    spec = mix_factory_spec(_config(duration), seed, AudioConfig(sample_rate=16000), sources=manifest)
    start = time.perf_counter()
    result = write_store_job(StoreJob(str(out), num, spec, ShardConfig(max_count=max_count)), executor="ray",
                             workers=workers)
    elapsed = time.perf_counter() - start
    assert result.manifest["num_samples"] + len(result.drops) == num
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=256, help="tuples per run")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per tuple")
    ap.add_argument("--max-count", type=int, default=16, help="tuples per shard group (= per Ray task)")
    ap.add_argument("--repeat", type=int, default=1, help="alternating 1-worker / 2-worker runs; medians reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from toy_sources import write_toy_sources

    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_mixing_"))
    try:
        manifest = write_toy_sources(tmp / "toy", per_class=4, seconds=6.0)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024 * 1024,
                 configure_logging=False, _temp_dir=str(tmp / "ray"))
        startup = time.perf_counter() - t0
        try:
            _run(tmp / "warm", manifest, 2 * args.max_count, args.duration, args.max_count, 2, args.seed + 1)
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeat):
                for workers in (1, 2):
                    times[workers].append(_run(tmp / f"w{workers}", manifest, args.num, args.duration,
                                               args.max_count, workers, args.seed))
            tars = {w: {p.name: p.read_bytes() for p in (tmp / f"w{w}").glob("*.tar")} for w in (1, 2)}
            same = bool(tars[1]) and tars[1] == tars[2]
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    audio_s = args.num * args.duration
    report = {"num": args.num, "duration_s": args.duration, "max_count": args.max_count, "groups": -(-args.num // args.max_count),
              "ray_init_s": round(startup, 2), "seconds_1_worker": round(t1, 2), "seconds_2_workers": round(t2, 2),
              "tuples_per_s_1": round(args.num / t1, 1), "tuples_per_s_2": round(args.num / t2, 1),
              "x_realtime_1": round(audio_s / t1, 1), "x_realtime_2": round(audio_s / t2, 1),
              "speedup_2_vs_1": round(t1 / t2, 2), "byte_identical": same, "cpus": os.cpu_count(),
              "runs": {str(k): [round(v, 2) for v in vs] for k, vs in times.items()}}
    print(f"synthetic mixing into shards via Ray tasks: {args.num} x {args.duration:g} s tuples, "
          f"{report['groups']} groups of {args.max_count}")
    print(f"  1 worker : {t1:6.2f} s  {report['tuples_per_s_1']:6.1f} tuples/s  {report['x_realtime_1']:6.1f}x real time")
    print(f"  2 workers: {t2:6.2f} s  {report['tuples_per_s_2']:6.1f} tuples/s  {report['x_realtime_2']:6.1f}x real time")
    print(f"  ratio 2 vs 1 workers: {report['speedup_2_vs_1']:.2f}x (goal >= 1.7x on 2 cores); "
          f"byte-identical shards: {same}; ray.init {startup:.1f} s (excluded)")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
