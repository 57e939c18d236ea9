"""Does the data engine pay off? `stemforge_run` over several seeds, each figure against its goal.

Runs the whole engine (flows/cycle.py `stemforge_run`: corpus, synthetic shards, scorers, separator 0, relabel
iterations with their compute-matched controls) once per seed, each in its own run directory
`<out>/<prefix>-s<seed>` (default runs/bench-engine-s<seed>), resumable: a second invocation skips what finished.
Then, per seed and over the seeds as mean +- std [min, max], with PASS/FAIL:

- natural SDRi gain of the last separator over separator 0 on the test scenes (report headline
  `gain_vs_iteration0`, paired over the same scene queries; goal >= +1.0 dB);
- gain of the last separator over its compute-matched control (same init, same steps, synthetic only; headline
  `gain_vs_control`; goal >= +0.5 dB with the 95 % interval above 0 - over the seeds: mean >= +0.5 dB and every
  seed's interval above 0);
- share of the pseudo-labelled natural scenes with Re-SDR > 15 dB, per iteration (`prop_re_sdr_gt15`; goal:
  non-decreasing; the last separator's is absent unless `engine.final_pseudo_label`);
- true SDR of the tracks the last filter kept minus those it dropped (report `last_filter.payoff.filters.all`: the
  final keep decision, every enabled filter together, against the demo corpus's audit stems; goal >= 5 dB).

Each demo seed takes about 18 minutes on 2 cores (15 without the final stage), so three take most of an hour.

    .venv/bin/python bench/bench_engine.py [--config configs/demo.yaml] [--set KEY=VALUE ...] [--seeds 0 1 2]
        [--out runs] [--prefix bench-engine] [--restart] [--json-out FILE]

Exit status: the number of seeds whose run failed (the goals are reported, not asserted).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOALS = {"gain_vs_iteration0_db": 1.0, "gain_vs_control_db": 0.5, "payoff_gap_db": 5.0}


def seed_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's figures from one run's report, each with its PASS/FAIL."""
    head = report["headline"]
    g0, gc = head.get("gain_vs_iteration0") or {}, head.get("gain_vs_control") or {}
    props = [r.get("prop_re_sdr_gt15") for r in report["iterations"]]
    payoff = (report.get("last_filter") or {}).get("payoff") or {}
    final = (payoff.get("filters") or {}).get("all") if payoff.get("available") else None
    kept, dropped = (final or {}).get("true_sdr_kept_db"), (final or {}).get("true_sdr_dropped_db")
    gap = None if kept is None or dropped is None else kept - dropped
    known = [p for p in props if p is not None]
    ci = gc.get("ci95_db")
    return {
        "iterations": head["iterations"], "stopped": (head.get("stopped") or {}).get("reason"),
        "natural_sdri_db": [r.get("natural_sdri_db") for r in report["iterations"]],
        "control_natural_sdri_db": [r.get("control_natural_sdri_db") for r in report["iterations"]],
        "gain_vs_iteration0_db": g0.get("gain_db"), "gain_vs_iteration0_ci95_db": g0.get("ci95_db"),
        "gain_vs_iteration0_pass": _at_least(g0.get("gain_db"), GOALS["gain_vs_iteration0_db"]),
        "gain_vs_control_db": gc.get("gain_db"), "gain_vs_control_ci95_db": ci, "gain_vs_control_n": gc.get("n"),
        "gain_vs_control_pass": _at_least(gc.get("gain_db"), GOALS["gain_vs_control_db"]) and bool(ci) and ci[0] > 0,
        "prop_re_sdr_gt15": props,
        "prop_re_sdr_gt15_pass": len(known) >= 2 and all(b >= a for a, b in zip(known, known[1:])),
        "payoff_filter_iteration": (report.get("last_filter") or {}).get("iteration"),
        "payoff_kept": (final or {}).get("kept"), "payoff_dropped": (final or {}).get("dropped"),
        "true_sdr_kept_db": kept, "true_sdr_dropped_db": dropped, "payoff_gap_db": gap,
        "payoff_gap_pass": _at_least(gap, GOALS["payoff_gap_db"]),
    }


def _at_least(x: float | None, goal: float) -> bool:
    return x is not None and x >= goal


def spread(xs: list[float | None]) -> dict[str, Any]:
    """mean, sample std, min, max over the seeds that have the figure."""
    v = [float(x) for x in xs if x is not None]
    if not v:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"n": len(v), "mean": mean, "std": std, "min": min(v), "max": max(v)}


def summary(figures: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Over the seeds: each figure's spread and PASS (its mean meets the goal; the control's interval in every seed)."""
    seeds = list(figures.values())
    out: dict[str, Any] = {}
    for key in ("gain_vs_iteration0_db", "gain_vs_control_db", "payoff_gap_db"):
        s = spread([f[key] for f in seeds])
        out[key] = {**s, "seeds_passing": sum(f[key.replace("_db", "_pass")] for f in seeds),
                    "pass": _at_least(s["mean"], GOALS[key])}
    out["gain_vs_control_db"]["pass"] = out["gain_vs_control_db"]["pass"] and all(map(_ci_above_zero, seeds))
    depth = max(len(f["prop_re_sdr_gt15"]) for f in seeds)
    per_it = [spread([f["prop_re_sdr_gt15"][k] if k < len(f["prop_re_sdr_gt15"]) else None for f in seeds])
              for k in range(depth)]
    means = [s["mean"] for s in per_it if s["mean"] is not None]
    out["prop_re_sdr_gt15"] = {"per_iteration": per_it, "seeds_passing": sum(f["prop_re_sdr_gt15_pass"] for f in seeds),
                               "pass": len(means) >= 2 and all(b >= a for a, b in zip(means, means[1:]))}
    return out


def _ci_above_zero(f: dict[str, Any]) -> bool:
    ci = f["gain_vs_control_ci95_db"]
    return bool(ci) and ci[0] > 0


def _fmt(x: float | None, unit: str = " dB", signed: bool = True) -> str:
    return "n/a" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}") + unit


def _db(x: float | None) -> str:
    return _fmt(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _line(s: dict[str, Any], fmt: Callable[[float | None], str]) -> str:
    if not s["n"]:
        return "n/a"
    return f"{fmt(s['mean'])} +- {fmt(s['std']).lstrip('+')} [{fmt(s['min'])}, {fmt(s['max'])}] (n={s['n']})"


def print_seed(seed: int, f: dict[str, Any]) -> None:
    pct = [_pct(p) for p in f["prop_re_sdr_gt15"]]
    print(f"\nseed {seed}: {f['iterations']} iterations ({f['stopped']})\n"
          f"  natural SDRi per iteration (test): {f['natural_sdri_db']}; controls: {f['control_natural_sdri_db']}\n"
          f"  last vs iteration 0: {_fmt(f['gain_vs_iteration0_db'])} (95 % {f['gain_vs_iteration0_ci95_db']}); "
          f"goal >= +{GOALS['gain_vs_iteration0_db']:.1f} dB: {_verdict(f['gain_vs_iteration0_pass'])}\n"
          f"  last vs its control: {_fmt(f['gain_vs_control_db'])} (95 % {f['gain_vs_control_ci95_db']}, "
          f"n={f['gain_vs_control_n']}); goal >= +{GOALS['gain_vs_control_db']:.1f} dB, interval above 0: "
          f"{_verdict(f['gain_vs_control_pass'])}\n"
          f"  scenes with Re-SDR > 15 dB per iteration: {pct}"
          + (" (n/a: that separator did not pseudo-label; engine.final_pseudo_label=true measures the last)"
             if None in f["prop_re_sdr_gt15"] else "")
          + f"; goal non-decreasing: {_verdict(f['prop_re_sdr_gt15_pass'])}\n"
          f"  filter_{f['payoff_filter_iteration']} kept {f['payoff_kept']} / dropped {f['payoff_dropped']}: true SDR "
          f"{_fmt(f['true_sdr_kept_db'], signed=False)} vs {_fmt(f['true_sdr_dropped_db'], signed=False)}, gap "
          f"{_fmt(f['payoff_gap_db'])}; goal >= {GOALS['payoff_gap_db']:.1f} dB: {_verdict(f['payoff_gap_pass'])}",
          flush=True)


def print_summary(s: dict[str, Any], n: int) -> None:
    props = s["prop_re_sdr_gt15"]
    print(f"\nover {n} seed(s), mean +- std [min, max]:\n"
          f"  last vs iteration 0:  {_line(s['gain_vs_iteration0_db'], _db)}; seeds passing "
          f"{s['gain_vs_iteration0_db']['seeds_passing']}/{n}; goal mean >= +{GOALS['gain_vs_iteration0_db']:.1f} dB: "
          f"{_verdict(s['gain_vs_iteration0_db']['pass'])}\n"
          f"  last vs its control:  {_line(s['gain_vs_control_db'], _db)}; seeds passing "
          f"{s['gain_vs_control_db']['seeds_passing']}/{n}; goal mean >= +{GOALS['gain_vs_control_db']:.1f} dB and "
          f"every interval above 0: {_verdict(s['gain_vs_control_db']['pass'])}\n"
          f"  Re-SDR > 15 dB share:  " + "; ".join(f"iteration {k} {_line(it, _pct)}" for k, it in enumerate(props["per_iteration"]))
          + f"; seeds passing {props['seeds_passing']}/{n}; goal means non-decreasing: {_verdict(props['pass'])}\n"
          f"  kept - dropped true SDR: {_line(s['payoff_gap_db'], _db)}; seeds passing {s['payoff_gap_db']['seeds_passing']}/{n}; "
          f"goal mean >= {GOALS['payoff_gap_db']:.1f} dB: {_verdict(s['payoff_gap_db']['pass'])}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable); run.seed comes from --seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs", help="runs folder")
    ap.add_argument("--prefix", default="bench-engine", help="run names: <prefix>-s<seed>")
    ap.add_argument("--restart", action="store_true", help="wipe each seed's run directory first")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING)
    # a first ephemeral API creates its database; Prefect's 20 s start-up limit is too short on a loaded 2-core box
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from engine.run_config import load
    from flows.cycle import stemforge_run

    figures: dict[int, dict[str, Any]] = {}
    runs: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        name = f"{args.prefix}-s{seed}"
        cfg = load(args.config, [*args.sets, f"run.seed={seed}"])
        t0 = time.perf_counter()
        try:
            report = stemforge_run(config=cfg.model_dump(mode="json"), out_root=args.out, name=name,
                                   restart=args.restart)
        except Exception as exc:  # noqa: BLE001 - one seed's failure is reported; the others still run
            runs[seed] = {"name": name, "failed": f"{type(exc).__name__}: {exc}"}
            print(f"\nseed {seed}: FAILED ({runs[seed]['failed']})", flush=True)
            continue
        runs[seed] = {"name": name, "seconds": round(time.perf_counter() - t0, 1),
                      "resumed_steps": len(report.get("resumed_steps", [])), "report": report["files"]["json"]}
        figures[seed] = seed_figures(report)
        print_seed(seed, figures[seed])
    result: dict[str, Any] = {"config": args.config, "overrides": args.sets, "seeds": args.seeds, "goals": GOALS,
                              "runs": runs, "per_seed": figures}
    if figures:
        result["summary"] = summary(figures)
        print_summary(result["summary"], len(figures))
    print(json.dumps(result, default=float))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=1, default=float))
    return sum("failed" in r for r in runs.values())


if __name__ == "__main__":
    raise SystemExit(main())
