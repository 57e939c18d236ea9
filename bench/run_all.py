"""`make bench`: the benchmarks that need nothing but the repo (a few minutes), results under bench_out/.

Runs, one after the other so they do not share cores: shard writing vs plain webdataset, mixing vs Scaper (Scaper
rows only when bench/setup_scaper.sh has built its venv), the `tiny` separator's inference speed, and Prefect's
overhead of the relabel cycle on the tiny preset (flow vs the same steps called directly). The long or
checkpoint-bound ones are listed at the end with their commands (separator quality: 10 minutes per arm on a demo
corpus; scorer throughput: needs trained checkpoints; the engine's effect: about 15 minutes per demo seed). Exit
status: the number of benchmarks that failed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench_out"


def main() -> int:
    py = sys.executable
    scaper = REPO / "bench" / ".venv-scaper" / "bin" / "python"
    runs = [
        ("shards", [py, "bench/bench_shards.py", "--out", str(OUT / "shards.md")]),
        ("mixing", [py, "bench/bench_mixing.py", "--num", "100", "--repeat", "3", "--out", str(OUT / "mixing")]
         + ([] if scaper.exists() else ["--skip-scaper"])),
        ("separator speed", [py, "bench/bench_separator.py", "--speed-only", "--skip-clapsep", "--threads", "1",
                             "--out", str(OUT / "separator_speed")]),
        ("prefect overhead", [py, "bench/bench_prefect.py", "--json-out", str(OUT / "prefect.json")]),
    ]
    if not scaper.exists():
        print("note: no Scaper venv (bash bench/setup_scaper.sh): the mixing benchmark runs without its Scaper rows")
    failed = 0
    for name, cmd in runs:
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.call(cmd, cwd=REPO)
        if rc != 0:
            print(f"=== {name} FAILED (exit {rc})", flush=True)
            failed += 1
    print("\nLonger benchmarks (not run here):\n"
          "  .venv/bin/stemforge corpus demo --out /tmp/demo\n"
          "  .venv/bin/python bench/bench_separator.py --corpus /tmp/demo --steps 2950   # quality, ~27 min\n"
          "  .venv/bin/python bench/eval_clap.py && .venv/bin/python bench/bench_scorers.py   # scorers\n"
          "  .venv/bin/python bench/bench_engine.py --seeds 0 1 2   # engine vs iteration 0 / control, ~45 min")
    return failed


if __name__ == "__main__":
    sys.exit(main())
