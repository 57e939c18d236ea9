"""Shard-writing throughput: `storage.shards.write_store` vs plain `webdataset.ShardWriter`, same samples, same run.

Both writers get the identical pre-encoded samples (FLAC mix/target/residual + JSON bytes) and the same shard size;
only writing is timed. Our store additionally fsyncs and atomically renames every shard and writes a Parquet index
part per shard. Runs alternate (plain, ours, plain, ours, ...) so drift on a shared machine hits both equally; the
median of the repeats is reported. Goal: ours >= 0.8x plain.

    .venv/bin/python bench/bench_shards.py [--num 200] [--seconds 10] [--repeats 5] [--out docs/perf/shards.md]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))  # toy_shards (test fixture, not library code)

from storage.atomic import atomic_write_text  # noqa: E402
from storage.shards import ShardConfig, write_store  # noqa: E402
from toy_shards import SyntheticSamples  # noqa: E402


def make_samples(num: int, seconds: float, sample_rate: int, seed: int) -> list[dict[str, Any]]:
    """Encode once: noise-like 10 s tuples, JSON already serialised, so both writers copy identical bytes."""
    factory = SyntheticSamples(seed=seed, seconds=seconds, sample_rate=sample_rate)
    samples = []
    for i in range(num):
        s = factory(i)
        assert s is not None
        s["json"] = json.dumps(s["json"], sort_keys=True).encode()
        samples.append(s)
    return samples


def run_plain(samples: list[dict[str, Any]], out: Path, max_count: int, max_bytes: int) -> float:
    import webdataset as wds

    out.mkdir(parents=True)
    start = time.perf_counter()
    with wds.ShardWriter(str(out / "plain-%06d.tar"), maxcount=max_count, maxsize=max_bytes, verbose=0,
                         encoder=False, mtime=0) as sink:
        for s in samples:
            sink.write(s)
    return time.perf_counter() - start


def run_ours(samples: list[dict[str, Any]], out: Path, max_count: int, max_bytes: int, fsync: bool) -> float:
    cfg = ShardConfig(max_count=max_count, max_bytes=max_bytes, fsync=fsync)
    start = time.perf_counter()
    manifest = write_store(out, samples.__getitem__, len(samples), cfg)
    elapsed = time.perf_counter() - start
    assert manifest["num_samples"] == len(samples)
    return elapsed


def measure_reading(samples: list[dict[str, Any]], out: Path, max_count: int) -> dict[str, float]:
    """Secondary figure: decode throughput of `iter_samples` vs plain `webdataset.WebDataset` + soundfile."""
    import io

    import soundfile as sf
    import webdataset as wds

    from storage.shards.reader import iter_samples, list_shards

    write_store(out, samples.__getitem__, len(samples), ShardConfig(max_count=max_count))
    shards = list_shards(out)

    def plain_decode(sample: dict[str, Any]) -> dict[str, Any]:
        for k in [k for k in sample if k.endswith(".flac")]:
            sample[k] = sf.read(io.BytesIO(sample[k]), dtype="float32")[0]
        sample["json"] = json.loads(sample["json"])
        return sample

    start = time.perf_counter()
    n_plain = sum(1 for _ in wds.WebDataset(shards, shardshuffle=False).map(plain_decode))
    plain = time.perf_counter() - start
    start = time.perf_counter()
    n_ours = sum(1 for _ in iter_samples(out))
    ours = time.perf_counter() - start
    assert n_plain == n_ours == len(samples)
    print(f"  read+decode: plain webdataset {len(samples) / plain:.1f} samples/s, iter_samples {len(samples) / ours:.1f}")
    return {"plain": plain, "ours": ours}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--max-count", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="Where shards are written (default: a temp dir).")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "perf" / "shards.md")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    samples = make_samples(args.num, args.seconds, args.sample_rate, args.seed)
    encode_s = time.perf_counter() - t0
    total_bytes = sum(len(v) for s in samples for k, v in s.items() if not k.startswith("__"))
    max_bytes = 1 << 40  # count-limited shards for both writers, so they cut at the same samples
    print(f"{args.num} samples x {args.seconds:g} s @ {args.sample_rate} Hz: {total_bytes / 1e6:.1f} MB encoded "
          f"in {encode_s:.1f} s; shards of {args.max_count}")

    times: dict[str, list[float]] = {"plain": [], "ours": [], "ours_nofsync": []}
    root = Path(tempfile.mkdtemp(prefix="bench_shards_", dir=args.workdir))
    try:
        for rep in range(args.repeats):
            for name in ("plain", "ours", "ours_nofsync"):
                out = root / f"{name}-{rep}"
                if name == "plain":
                    t = run_plain(samples, out, args.max_count, max_bytes)
                else:
                    t = run_ours(samples, out, args.max_count, max_bytes, fsync=(name == "ours"))
                times[name].append(t)
                shutil.rmtree(out)
                print(f"  repeat {rep}: {name:13s} {t:7.3f} s  {args.num / t:8.1f} samples/s  "
                      f"{total_bytes / t / 1e6:7.1f} MB/s")
        read = measure_reading(samples, root / "read", args.max_count)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    sps = {k: args.num / v for k, v in med.items()}
    best_sps = {k: args.num / v for k, v in best.items()}
    ratio = sps["ours"] / sps["plain"]
    # Per-repeat ratios pair runs taken seconds apart, which cancels slow drift from other jobs on the machine.
    paired = statistics.median(p / o for p, o in zip(times["plain"], times["ours"]))
    print(f"median: plain {sps['plain']:.1f} samples/s, ours {sps['ours']:.1f} samples/s "
          f"(fsync off: {sps['ours_nofsync']:.1f}); ratio ours/plain = {ratio:.2f}x (goal >= 0.8x); "
          f"median paired ratio {paired:.2f}x; best-of ratio {best_sps['ours'] / best_sps['plain']:.2f}x")

    lines = [
        "# Shard writing throughput",
        "",
        f"`bench/bench_shards.py --num {args.num} --seconds {args.seconds:g} --max-count {args.max_count} "
        f"--repeats {args.repeats}` on {platform.machine()} / Python {platform.python_version()} "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        f"{args.num} pre-encoded samples (24-bit FLAC mix/target/residual of {args.seconds:g} s @ {args.sample_rate} Hz "
        f"+ JSON), {total_bytes / 1e6:.1f} MB, shards of {args.max_count} samples. Same samples, same run, alternating "
        "writers; median of the repeats.",
        "",
        "| writer | median s | samples/s | MB/s | ratio vs plain | best s | best samples/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {"plain": "plain `webdataset.ShardWriter` (no fsync, no index)",
              "ours": "`write_store` (fsync + atomic rename + Parquet index)",
              "ours_nofsync": "`write_store` with `fsync: false`"}
    for k in ("plain", "ours", "ours_nofsync"):
        lines.append(f"| {labels[k]} | {med[k]:.3f} | {sps[k]:.1f} | {total_bytes / med[k] / 1e6:.1f} | "
                     f"{sps[k] / sps['plain']:.2f}x | {best[k]:.3f} | {best_sps[k]:.1f} |")
    lines += ["", f"Goal >= 0.8x: **{'met' if ratio >= 0.8 else 'NOT met'}** (ratio of medians {ratio:.2f}x; "
              f"median of paired per-repeat ratios {paired:.2f}x; best-of {best_sps['ours'] / best_sps['plain']:.2f}x). "
              "Raw repeats (s): " + "; ".join(f"{k}: {', '.join(f'{t:.3f}' for t in v)}" for k, v in times.items()),
              "", "Reading back (one pass, decode every FLAC to float32 and the JSON): plain "
              f"`webdataset.WebDataset` + soundfile {args.num / read['plain']:.1f} samples/s, `iter_samples` "
              f"{args.num / read['ours']:.1f} samples/s ({read['plain'] / read['ours']:.2f}x).",
              "", "Measured on a shared 2-core machine under load from other jobs; figures are indicative.", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
