"""Kill anywhere, same result (issue 15 item 1): `stemforge run` killed at seeded points, resumed, compared.

An uninterrupted reference run of the chaos config per backend (tests/chaos/harness.py: configs/tiny.yaml with
several shards per store and every candidate kept), then `--rounds` rounds, each in a fresh run
directory at the same absolute path as the reference (shards and checkpoints record their source paths):

- a named kill point, the four kinds in turn (shard commit: a tar or its index part about to be renamed into place;
  checkpoint writing: a `.pt` saved under its temp name; a Prefect state transition: a step's marker just
  published, Prefect's Completed not yet; a step's start), drawn with `--seed` among the points the reference run
  passed;
- then a wall-clock SIGKILL of the driver at a seeded fraction of what is left of the run (lands anywhere);
- the first `--ray-rounds` rounds run on Ray (engine.backend=ray, their own local Ray in a temp dir) and SIGKILL a
  busy Ray worker process instead (a lost worker: the engine retries its task, or the driver fails and is resumed);
- resumed until it ends, then compared with the reference (harness.compare: candidates tables, shard bytes, report
  figures, release weights, no temp file, every store verifies).

    .venv/bin/python bench/chaos.py [--rounds 10] [--seed 0] [--ray-rounds 1] [--out runs/bench-chaos]
        [--json-out FILE]

Prints one line per invocation and a summary; writes `<out>/chaos.json`. Exit status: the number of rounds whose
end state differed (or that did not finish).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "chaos"))

import harness as h  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ray-rounds", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench-chaos"))
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)

    base = Path(args.out).absolute()
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    refs = {"inprocess": h.reference(base)}
    if args.ray_rounds:
        refs["ray"] = h.reference(base, "ray")
    for backend, (ref, ref_s) in refs.items():
        print(f"reference [{backend}]: {ref_s:.0f} s, {ref}", flush=True)
    ref, ref_s = refs["inprocess"]
    rounds = []
    for r, (backend, kills) in enumerate(h.plan_rounds(ref, ref_s, args.rounds, args.seed, args.ray_rounds)):
        label = f"round-{r:02d}"
        res = h.run_round(base, label, backend, kills, *refs[backend])
        problems, compared = h.compare(refs[backend][0], res.root) if not res.problems else ([], {})
        problems = res.problems + problems
        for inv in res.invocations:
            what = inv.killed or f"exit {inv.rc}"
            print(f"{label} [{backend}] {inv.label}: {what} ({inv.seconds:.0f} s)", flush=True)
        print(f"{label}: {'SAME' if not problems else 'DIFFERENT'} {json.dumps(compared)}", flush=True)
        for p in problems:
            print(f"  {p}", flush=True)
        rounds.append({"round": r, "backend": backend, "planned": [k.label for k in kills],
                       "invocations": [{"label": i.label, "rc": i.rc, "seconds": round(i.seconds, 1),
                                        "killed": i.killed} for i in res.invocations],
                       "kills": sum(1 for i in res.invocations if i.killed), "compared": compared,
                       "problems": problems})
    summary = {
        "rounds": len(rounds), "seed": args.seed,
        "reference_seconds": {b: round(s, 1) for b, (_, s) in refs.items()},
        "kills_landed": sum(r["kills"] for r in rounds),
        "resumes": sum(len(r["invocations"]) - 1 for r in rounds),
        "identical_rounds": sum(1 for r in rounds if not r["problems"]),
        "shard_bytes_compared": sum(r["compared"].get("shard_bytes", 0) for r in rounds),
        "shards_compared": sum(r["compared"].get("shards", 0) for r in rounds),
        "candidate_rows_compared": sum(r["compared"].get("candidate_rows", 0) for r in rounds),
        "report_leaves_compared": sum(r["compared"].get("report_leaves", 0) for r in rounds),
        "final_checkpoints_compared": sum(r["compared"].get("final_checkpoints", 0) for r in rounds),
        "stores_verified": sum(r["compared"].get("stores_verified", 0) for r in rounds),
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(summary, indent=1))
    out = {"summary": summary, "rounds": rounds}
    (base / "chaos.json").write_text(json.dumps(out, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    return len(rounds) - summary["identical_rounds"]


if __name__ == "__main__":
    sys.exit(main())
