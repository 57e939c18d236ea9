"""Prefect overhead of the relabel cycle: the `relabel_cycle` flow vs the same engine steps called directly.

Measured on one config (default: configs/tiny.yaml with `engine.backend=inprocess`):
- in new processes, what `stemforge run` pays before its first step: importing flows.cycle and running a no-op flow, which starts the
  ephemeral API (a temporary local server under a fresh PREFECT_HOME, unless PREFECT_API_URL names a server),
  once with a new home (its database is created) and once with the existing one; reported apart, since a
  `stemforge run` process pays it once whatever the run;
- in this process, after an untimed warm-up run (first-use costs: lazy imports inside the steps, JIT compilation,
  font caches), (a) `flows.cycle.relabel_cycle` on a fresh run directory, then invoked again on it (resumed: a task whose step had
  finished when it was called hits Prefect's cache; the others resume from their done-markers inside the task);
- (b) the same engine steps (engine/steps.py) called directly in the flow's order on a second fresh directory,
  then again (resumed from the done-markers);
- per-run overhead (a) - (b), fresh and resumed, in wall seconds against the goal "<= 10 s per run" and in CPU
  seconds (this process and its descendants, the API included: steadier than wall time on a shared machine), each
  step's own seconds on both paths and the time outside the steps, and whether both paths trained
  the same separators and controls (weights hashed; the engine's `checkpoint_hash` is also compared, though it
  hashes the whole file, which records its save time and the run directory's paths).

The direct path (`direct_cycle`) lives in this file only: it is the measurement reference, not a second way to run
the engine (`stemforge run`, deployments and `stemforge serve` all run flows/cycle.py). It mirrors
`relabel_cycle` step for step - build when needed, scorers and separator 0 (under Ray concurrently, in threads as
Prefect's default task runner does), evaluate_0, filter_0, then per iteration tiers, retrain (and control),
evaluate, filter, the stop rule - and writes the same report, so the difference is what Prefect adds. No timed
assertions: the figures are printed, with the ratio to the reference measured in the same run.

    .venv/bin/python bench/bench_prefect.py [--config configs/tiny.yaml] [--ray] [--set KEY=VALUE ...]
        [--repeat N] [--out DIR] [--keep] [--json-out FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOAL_OVERHEAD_S = 10.0


def direct_cycle(cfg: Any, out_root: Path, name: str) -> dict[str, Any]:
    """relabel_cycle's steps without Prefect (see the module doc); returns the report."""
    from engine import steps
    from engine.convergence import decide

    t0 = time.perf_counter()
    ctx = steps.open_run(cfg, out_root, name)
    with steps.backend_session(cfg) as session:
        corpus = steps.corpus(ctx)
        synthetic = steps.synthetic(ctx, corpus)
        separator0, scorers = _bootstrap(ctx, corpus, synthetic)
        clap = scorers["clap"] if cfg.engine.separator_queries == "run_clap" else None
        evals = [steps.evaluate(ctx, "0", separator0, corpus, synthetic, scorers)]
        filters = {0: steps.pseudo_label_and_filter(ctx, 0, corpus, separator0, scorers)}
        results: dict[str, Any] = {"corpus": corpus, "synthetic": synthetic, "scorers": scorers,
                                   "separators": [separator0], "evals": evals, "filters": filters, "controls": {},
                                   "control_evals": {}, "decisions": []}
        values = [steps.stop_value(cfg, evals[0], filters[0])]
        metric = steps.stop_metric_name(cfg, evals[0])
        k = 0
        while True:
            k += 1
            pseudo_label = metric.startswith("re_sdr") or cfg.engine.final_pseudo_label or k < cfg.run.max_iterations
            previous = results["separators"][-1]
            tiers = steps.tier_shards(ctx, k - 1, corpus, previous, scorers)
            concurrent = cfg.engine.backend == "ray" and steps.ray_cpus() >= 2 * cfg.engine.train_workers
            with ThreadPoolExecutor(max_workers=1) as pool:
                ctl_future: Future | None = None
                if cfg.engine.control and concurrent:
                    ctl_future = pool.submit(steps.control, ctx, k, synthetic, previous, clap)
                separator = steps.retrain(ctx, k, synthetic, corpus, previous, tiers, clap)
                ctl = None
                if cfg.engine.control:
                    ctl = ctl_future.result() if ctl_future is not None else steps.control(ctx, k, synthetic,
                                                                                            previous, clap)
            ev = steps.evaluate(ctx, str(k), separator, corpus, synthetic, scorers)
            cev = None if ctl is None else steps.evaluate(ctx, f"control_{k}", ctl, corpus, synthetic, scorers)
            filt = steps.pseudo_label_and_filter(ctx, k, corpus, separator, scorers) if pseudo_label else None
            results["separators"].append(separator)
            results["evals"].append(ev)
            if filt is not None:
                filters[k] = filt
            if ctl is not None:
                results["controls"][k], results["control_evals"][k] = ctl, cev
            values.append(steps.stop_value(cfg, ev, filt))
            decision = decide(values, min_gain_db=cfg.run.min_gain_db, min_iterations=cfg.run.min_iterations,
                              max_iterations=cfg.run.max_iterations, metric=metric)
            results["decisions"].append(decision.to_dict())
            if decision.stop:
                break
        results["stop"] = results["decisions"][-1]
        return steps.report(ctx, results, time.perf_counter() - t0, session)


def _bootstrap(ctx: Any, corpus: dict[str, Any], synthetic: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scorers and separator 0 as the flow runs them: under Ray the scorers as Ray tasks beside the separator, at
    most as many at once as the cores it leaves free; in-process one after another after it."""
    from engine import steps

    cfg = ctx.cfg
    clap = steps.scorer(ctx, "clap", corpus) if cfg.engine.separator_queries == "run_clap" else None
    pending = [w for w in steps.SCORERS if not (w == "clap" and clap is not None)]
    results = {} if clap is None else {"clap": clap}
    if cfg.engine.backend == "ray" and cfg.engine.parallel_scorers:
        free = max(1, int(steps.ray_cpus() - cfg.engine.train_workers))
        with ThreadPoolExecutor(max_workers=free) as pool:
            futures = {w: pool.submit(steps.scorer, ctx, w, corpus, True) for w in pending}
            separator = steps.bootstrap_separator(ctx, synthetic, clap)
            results.update({w: f.result() for w, f in futures.items()})
    else:
        separator = steps.bootstrap_separator(ctx, synthetic, clap)
        results.update({w: steps.scorer(ctx, w, corpus) for w in pending})
    return separator, {w: results[w] for w in steps.SCORERS}


def weights_hash(checkpoint: str | None) -> str | None:
    """sha256 over the state dict's names and tensor bytes: what the separator computes, not when it was saved."""
    if not checkpoint:
        return None
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoints(report: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """{separator_K / control_K: {file_hash, weights_hash}} from a report."""
    from storage.manifests import file_hash

    out = {}
    for row in report["iterations"]:
        k = row["iteration"]
        out[f"separator_{k}"] = {"file_hash": row["separator_hash"], "weights_hash": weights_hash(row["separator_checkpoint"])}
        if row.get("control_checkpoint"):
            out[f"control_{k}"] = {"file_hash": file_hash(row["control_checkpoint"])[:16],
                                   "weights_hash": weights_hash(row["control_checkpoint"])}
    return out


def _same(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], key: str) -> bool:
    return sorted(a) == sorted(b) and all(a[s][key] == b[s][key] for s in a)


def cpu_seconds() -> float:
    """CPU seconds of this process, its reaped children and its live descendants (the ephemeral Prefect API, Ray's
    processes): less disturbed than wall time by other work on a shared machine (a descendant that exits unreaped by
    this process is missed)."""
    import resource

    total = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
    tick = os.sysconf("SC_CLK_TCK")
    todo, seen = [os.getpid()], set()
    while todo:
        pid = todo.pop()
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split() if int(c) not in seen]
            if pid != os.getpid():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError):
            continue  # exited meanwhile
        seen.add(pid)
    return total


def measured(fn: Any, *args: Any, **kwargs: Any) -> tuple[dict[str, float], Any]:
    """({wall_s, cpu_s, load}, fn's result); `load`: the machine's 1-minute load average at the end, since wall
    figures on a shared machine mean little without it."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn(*args, **kwargs)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "load": os.getloadavg()[0]}, out


NOOP = ("import time; t0 = time.perf_counter(); import flows.cycle; from prefect import flow; "
        "flow(name='bench-noop')(lambda: 1)(); print(time.perf_counter() - t0)")


def prefect_process_s() -> float:
    """Seconds a new process spends importing flows.cycle and running a no-op flow: what every `stemforge run`
    pays before its first step (with an ephemeral API: its start-up)."""
    import subprocess

    res = subprocess.run([sys.executable, "-c", NOOP], cwd=REPO, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"no-op flow failed: {res.stderr[-2000:]}")
    return float(res.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable), after the backend's")
    ap.add_argument("--ray", action="store_true", help="engine.backend=ray (default: inprocess)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="fresh + resumed pairs per path, each on new directories, alternating which path goes "
                         "first; medians reported (a shared machine's load moves single runs by tens of seconds)")
    ap.add_argument("--out", type=Path, default=None, help="runs folder (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the runs folder and the Prefect home")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="sfbench-prefect-", dir="/tmp"))
    out_root = (args.out or tmp / "runs").absolute()
    ephemeral = "PREFECT_API_URL" not in os.environ
    if ephemeral:  # a fresh ephemeral API: no shared SQLite, no earlier cache records
        os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect-home"))
        # a fresh home creates its database first: Prefect's 20 s start-up limit is too short on a loaded 2-core box
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from engine.run_config import load

    cfg = load(args.config, [f"engine.backend={'ray' if args.ray else 'inprocess'}", *args.sets])
    config = cfg.model_dump(mode="json")
    result: dict[str, Any] = {"config": args.config, "overrides": [f"engine.backend={cfg.engine.backend}", *args.sets],
                              "prefect_api": "ephemeral" if ephemeral else os.environ["PREFECT_API_URL"],
                              "repeat": args.repeat}
    try:
        # fixed costs per process, apart from the per-run figures: a new home (database created) and an existing one
        result["prefect_process_s"] = {"new_home": round(prefect_process_s(), 2),
                                       "existing_home": round(prefect_process_s(), 2)}
        print(f"new process, import + no-op flow: {result['prefect_process_s']}", flush=True)
        # imported and started before anything is timed, so neither path pays them
        import engine.data_steps, engine.engine_steps, engine.evaluation, engine.model_steps, engine.report  # noqa: E401,F401
        from prefect import flow

        from flows.cycle import relabel_cycle

        flow(name="bench-noop")(lambda: 1)()
        # an untimed run first: the first run in a process pays first-use costs (lazy imports inside the steps, JIT
        # compilation, font caches) that would otherwise land on whichever path goes first
        t_warm = time.perf_counter()
        direct_cycle(cfg, out_root, "bench-prefect-warmup")
        result["warmup_s"] = round(time.perf_counter() - t_warm, 2)
        print(f"warm-up run (direct, untimed): {result['warmup_s']:.1f} s", flush=True)

        paths = {"direct": lambda name: direct_cycle(cfg, out_root, name),
                 "flow": lambda name: relabel_cycle(config=config, out_root=str(out_root), name=name)}
        figures: dict[str, list[dict[str, float]]] = {}
        reports: dict[str, dict[str, Any]] = {}
        for r in range(args.repeat):
            order = ("direct", "flow") if r % 2 == 0 else ("flow", "direct")
            for phase in ("fresh", "resumed"):
                for path in order:
                    fig, rep = measured(paths[path], f"bench-prefect-{path}-r{r}")
                    figures.setdefault(f"{path}_{phase}", []).append(fig)
                    reports.setdefault(f"{path}_{phase}", rep)  # the first repeat's
                    print(f"repeat {r} {path} {phase}: {fig['wall_s']:.1f} s wall, {fig['cpu_s']:.1f} CPU s, load "
                          f"average {fig['load']:.1f} on {os.cpu_count()} cores", flush=True)
        result["runs"] = {k: [{m: round(v, 2) for m, v in f.items()} for f in fs] for k, fs in figures.items()}
        med = {k: {m: median([f[m] for f in fs]) for m in ("wall_s", "cpu_s")} for k, fs in figures.items()}
        result["overhead"] = {}
        for phase in ("fresh", "resumed"):
            a, b = med[f"flow_{phase}"], med[f"direct_{phase}"]
            result["overhead"][phase] = {
                "flow_s": round(a["wall_s"], 2), "direct_s": round(b["wall_s"], 2),
                "overhead_s": round(a["wall_s"] - b["wall_s"], 2),
                "ratio_flow_over_direct": round(a["wall_s"] / b["wall_s"], 3),
                "flow_cpu_s": round(a["cpu_s"], 2), "direct_cpu_s": round(b["cpu_s"], 2),
                "overhead_cpu_s": round(a["cpu_s"] - b["cpu_s"], 2),
                "goal": f"<= {GOAL_OVERHEAD_S:g} s", "pass": a["wall_s"] - b["wall_s"] <= GOAL_OVERHEAD_S}
        # where the difference lies (first repeat): each step's own seconds (its marker's timing), and the wall time
        # outside them - orchestration, artifacts, the report - whose difference does not move with the steps'
        # share of a loaded machine
        steps_s = {p: {k: round(v, 2) for k, v in reports[f"{p}_fresh"]["timings"].items()} for p in ("flow", "direct")}
        outside = {p: figures[f"{p}_fresh"][0]["wall_s"] - sum(reports[f"{p}_fresh"]["timings"].values())
                   for p in ("flow", "direct")}
        result["steps_s"] = steps_s
        result["outside_steps_s"] = {**{p: round(v, 2) for p, v in outside.items()},
                                     "overhead_s": round(outside["flow"] - outside["direct"], 2),
                                     "pass": outside["flow"] - outside["direct"] <= GOAL_OVERHEAD_S}
        flow_ck, direct_ck = checkpoints(reports["flow_fresh"]), checkpoints(reports["direct_fresh"])
        result["checkpoints"] = {"flow": flow_ck, "direct": direct_ck,
                                 "weights_equal": _same(flow_ck, direct_ck, "weights_hash"),
                                 "file_hashes_equal": _same(flow_ck, direct_ck, "file_hash")}
        result["natural_sdri_db"] = {p: [r.get("natural_sdri_db") for r in reports[f"{p}_fresh"]["iterations"]]
                                     for p in ("flow", "direct")}
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            result["kept"] = str(tmp)

    pp = result["prefect_process_s"]
    print(f"\nnew process, import flows.cycle + a no-op flow (ephemeral API start-up): {pp['new_home']:.1f} s with a "
          f"new Prefect home, {pp['existing_home']:.1f} s with an existing one (once per process; not in the per-run "
          f"figures)")
    for phase, o in result["overhead"].items():
        print(f"{phase:8s} run{' (median)' if args.repeat > 1 else ''}: flow {o['flow_s']:6.1f} s, direct "
              f"{o['direct_s']:6.1f} s, overhead {o['overhead_s']:+6.1f} s (flow/direct "
              f"{o['ratio_flow_over_direct']:.3f}; CPU {o['flow_cpu_s']:.1f} vs {o['direct_cpu_s']:.1f} s, "
              f"{o['overhead_cpu_s']:+.1f} s); goal {o['goal']}: {'PASS' if o['pass'] else 'FAIL'}")
    steps_f, steps_d = result["steps_s"]["flow"], result["steps_s"]["direct"]
    print("fresh run, seconds per step (flow / direct): " + ", ".join(
        f"{k} {steps_f[k]:.1f}/{steps_d.get(k, float('nan')):.1f}" for k in steps_f))
    out = result["outside_steps_s"]
    print(f"fresh run, wall time outside the steps: flow {out['flow']:.1f} s, direct {out['direct']:.1f} s, overhead "
          f"{out['overhead_s']:+.1f} s; goal <= {GOAL_OVERHEAD_S:g} s: {'PASS' if out['pass'] else 'FAIL'}")
    ck = result["checkpoints"]
    print(f"checkpoints {', '.join(ck['flow'])}: weights {'equal' if ck['weights_equal'] else 'DIFFER'} between flow "
          f"and direct; file hashes {'equal' if ck['file_hashes_equal'] else 'differ'} (a file records its save time "
          f"and run directory)")
    print(f"natural SDRi per iteration: flow {result['natural_sdri_db']['flow']}, direct {result['natural_sdri_db']['direct']}")
    print(json.dumps(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
