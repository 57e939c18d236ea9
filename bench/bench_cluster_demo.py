"""The demo (`configs/demo.yaml`) as Ray jobs on a real two-node cluster on this machine, both ways of submitting.

Starts a head and a worker node with `ray start` (tests/engine/ray_cluster.py: one CPU each, bounded object stores,
their own temp dir, stopped by PID - never `ray stop`), then runs the whole demo twice as jobs:
`stemforge submit --wait -- run --config configs/demo.yaml` and the plain Ray CLI
`ray job submit --working-dir . -- stemforge run --config configs/demo.yaml`, each into its own run directory
`<out>/<name>` (`--name` is a template over the job's seed; `--out` is absolute: on one machine every node sees it,
on a real cluster it is shared storage). `--submit-seed` / `--ray-seed` pick each job's `run.seed`; with
`--name 'bench-engine-s{seed}' --out runs` the jobs are seeds of `bench/bench_engine.py`, which then resumes them.
Prints, per job, its wall time, whether its driver joined the cluster, the Ray tasks per node, and - where a
reference run of the same seed exists (`--reference`, a template too) - whether the report's figures are the same:
step budgets and per-step seeds make a run's figures independent of where its steps ran.

    .venv/bin/python bench/bench_cluster_demo.py [--out /tmp/sf-cluster-demo] [--name 'demo-{kind}-s{seed}']
        [--submit-seed 0] [--ray-seed 0] [--reference 'runs/demo'] [--only submit|ray] [--set KEY=VALUE ...]
        [--json-out FILE]

Takes about as long as two `make run`s (the cluster has the same two cores).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))

from ray_cluster import RAY, cluster_env, start_cluster  # noqa: E402

#: report figures that must not depend on where the steps ran
FIGURES = ("natural_sdri_db", "control_natural_sdri_db", "sdri_db", "si_sdri_db", "kept_itt", "kept_sst",
           "prop_re_sdr_gt15", "candidates")


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The location-independent figures of a report: per iteration, the headline and the stop reason."""
    rows = [{k: r.get(k) for k in FIGURES} for r in report.get("iterations", [])]
    head = report.get("headline", {})
    return {"iterations": rows, "stopped": (head.get("stopped") or {}).get("reason"),
            "gain_vs_control": (head.get("gain_vs_control") or {}).get("gain_db"),
            "gain_vs_iteration0": (head.get("gain_vs_iteration0") or {}).get("gain_db")}


def tasks_per_node(dashboard: str) -> dict[str, int]:
    """Finished Ray tasks and actor calls so far, by node id (Ray's state API): where the jobs' work ran."""
    try:
        from engine.ray_runtime import apply_auth_mode
        from ray.util.state import list_tasks

        apply_auth_mode()
        counts: dict[str, int] = {}
        for t in list_tasks(address=dashboard, limit=10_000, raise_on_missing_output=False):
            node = getattr(t, "node_id", None) or "unscheduled"
            counts[node[:12]] = counts.get(node[:12], 0) + 1
        return counts
    except Exception as exc:  # noqa: BLE001 - a figure of the report, not a condition of it
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def run_job(kind: str, dashboard: str, out: Path, name: str, seed: int, overrides: list[str],
            timeout_s: float) -> dict[str, Any]:
    sets = [a for o in [*overrides, f"run.seed={seed}"] for a in ("--set", o)]
    run_args = ["run", "--config", "configs/demo.yaml", "--out", str(out), "--name", name, *sets]
    sub = f"bench-{kind}-{int(time.time())}"
    if kind == "submit":
        cmd = [sys.executable, "-m", "flows.cli", "submit", "--address", dashboard, "--wait", "--submission-id", sub,
               "--", *run_args]
    else:
        cmd = [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".", "--submission-id", sub, "--",
               "stemforge", *run_args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=str(REPO), env=cluster_env(), capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    logs = subprocess.run([sys.executable, "-m", "flows.cli", "jobs", "logs", "--address", dashboard, sub],
                          cwd=str(REPO), env=cluster_env(), capture_output=True, text=True, timeout=120).stdout
    report_path = out / name / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {"kind": kind, "seed": seed, "run": str(out / name), "submission_id": sub, "returncode": res.returncode, "wall_s": round(wall, 1),
            "joined_cluster": "joining that cluster instead of starting one" in logs,
            "report": str(report_path) if report else None, "figures": figures(report) if report else None,
            "tail": (res.stdout + res.stderr)[-3000:] if res.returncode else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/sf-cluster-demo", help="absolute root of the jobs' run directories")
    ap.add_argument("--name", default="demo-{kind}-s{seed}", help="run name template ({kind}, {seed})")
    ap.add_argument("--submit-seed", type=int, default=0, help="run.seed of the `stemforge submit` job")
    ap.add_argument("--ray-seed", type=int, default=0, help="run.seed of the `ray job submit` job")
    ap.add_argument("--reference", default=str(REPO / "runs" / "demo"),
                    help="a run of the same config and seed to compare with (template over {seed})")
    ap.add_argument("--only", choices=["submit", "ray"], default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per job, seconds")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    out_root = Path(args.out).resolve()
    results = []
    references: dict[str, Any] = {}
    cluster = start_cluster(workers=1)
    try:
        print(f"cluster: head {cluster.address}, dashboard {cluster.dashboard}, 2 nodes x 1 CPU", file=sys.stderr)
        for kind in [args.only] if args.only else ["submit", "ray"]:
            seed = args.submit_seed if kind == "submit" else args.ray_seed
            name = args.name.format(kind=kind, seed=seed)
            r = run_job(kind, cluster.dashboard, out_root, name, seed, args.overrides, args.timeout)
            r["ray_tasks_per_node_so_far"] = tasks_per_node(cluster.dashboard)
            ref = Path(args.reference.format(seed=seed)) / "report.json"
            reference = figures(json.loads(ref.read_text())) if ref.exists() and ref.parent.resolve() != Path(r["run"]) else None
            references[kind] = {"path": str(ref), "figures": reference}
            r["same_figures_as_reference"] = None if reference is None or r["figures"] is None else r["figures"] == reference
            results.append(r)
            print(f"{kind:6s}: seed {seed}, rc {r['returncode']}, {r['wall_s']:.0f} s, joined the cluster: "
                  f"{r['joined_cluster']}, same figures as {ref.parent}: {r['same_figures_as_reference']}, "
                  f"Ray tasks by node so far: {r['ray_tasks_per_node_so_far']}", file=sys.stderr)
    finally:
        cluster.stop()
    text = json.dumps({"references": references, "jobs": results}, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return sum(1 for r in results if r["returncode"] != 0)


if __name__ == "__main__":
    raise SystemExit(main())
