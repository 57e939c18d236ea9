"""The run report: `report.json` (machine-readable, per iteration), `report.md` (tables) and PNG plots.

Plotting lives in `engine` (not `pipelines`): it is presentation, not signal processing, and matplotlib is only
imported here, with the non-interactive Agg backend so it works headless.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from storage.atomic import atomic_path, atomic_write_text

ITERATION_KEYS = ("iteration", "separator_checkpoint", "sdri_db", "si_sdri_db", "natural_sdri_db",
                  "control_natural_sdri_db", "val_natural_sdri_db", "stop_value", "silence_sdr_db",
                  "candidates", "kept_itt", "kept_sst", "kept_hours_itt", "kept_hours_sst", "re_sdr_mean_db",
                  "prop_re_sdr_gt15", "rejections")

# evaluation figures beside SDRi (engine/evaluation.py REPORT_KEYS; models/separator/evaluate.py defines them)
EVAL_KEYS = ("iteration", "natural_items", "natural_sdri_db", "natural_sdri_ci95_db", "natural_silent_baseline_sdri_db",
             "natural_silent_share", "sdri_db", "sdri_ci95_db", "silent_baseline_sdri_db", "silent_share")

SCORE_THRESHOLDS = (("re_sdr_db", "itt_min_db"), ("clap_target", "clap_target_min"), ("clap_residual", "clap_residual_max"),
                    ("pc_target", "pc_max"), ("silence_ratio", "silence_ratio_max"), ("judge_overall", "judge_min"))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in v.items()) or "-"
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{v[0]:.2f}, {v[1]:.2f}]"  # a 95 % interval
    return str(v)


def _table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |\n" for r in rows)


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")


def plot_sdri(iterations: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["iteration"] for r in iterations]
    for key, label in (("sdri_db", "synthetic SDRi"), ("si_sdri_db", "synthetic SI-SDRi"), ("natural_sdri_db", "natural SDRi"),
                       ("control_natural_sdri_db", "natural SDRi, control")):
        ys = [np.nan if r.get(key) is None else r[key] for r in iterations]
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("iteration (0 = bootstrap)")
    ax.set_ylabel("dB")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_histograms(table: dict[str, np.ndarray], thresholds: dict[str, Any], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5))
    for ax, (col, thr_key) in zip(axes.ravel(), SCORE_THRESHOLDS):
        vals = np.asarray(table.get(col, []), dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            ax.hist(vals, bins=30, color="#4c72b0", alpha=0.85)
        thr = thresholds.get(thr_key)
        if thr is not None:
            ax.axvline(float(thr), color="#c44e52", linestyle="--", label=f"threshold {thr}")
            if col == "re_sdr_db":
                ax.axvline(float(thresholds.get("sst_min_db", thr)), color="#dd8452", linestyle=":", label="SST")
            ax.legend(fontsize=7)
        ax.set_title(f"{col} (n={vals.size})", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_sweep(sweep: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for tier in ("itt", "sst"):
        rows = sorted((r for r in sweep if r["tier"] == tier), key=lambda r: r["judge_threshold"])
        ax.plot([r["judge_threshold"] for r in rows], [r["fraction"] for r in rows], marker="o", label=tier.upper())
    ax.set_xlabel("judge overall threshold")
    ax.set_ylabel("kept fraction of candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def per_class_rows(iterations: list[dict[str, Any]], key: str = "natural_per_class") -> tuple[list[dict[str, Any]], list[str]]:
    """One row per target class: n, the all-zero-estimate SDRi (checkpoint-independent) and SDRi / silent share
    per iteration; returns (rows, column names)."""
    classes = sorted({c for r in iterations for c in (r.get(key) or {})})
    cols = ["class", "n", "zero_est_sdri_db"]
    for r in iterations:
        cols += [f"sdri_db_{r['iteration']}", f"silent_{r['iteration']}"]
    rows = []
    for c in classes:
        row: dict[str, Any] = {"class": c}
        for r in iterations:
            pc = (r.get(key) or {}).get(c) or {}
            row.setdefault("n", pc.get("n"))
            row.setdefault("zero_est_sdri_db", pc.get("silent_baseline_sdri_db"))
            row[f"sdri_db_{r['iteration']}"] = pc.get("sdri_db")
            row[f"silent_{r['iteration']}"] = pc.get("silent_share")
        rows.append(row)
    return rows, cols


def table2_rows(report_out: dict[str, Any]) -> list[dict[str, Any]]:
    """ClearSep Table 2's shape: SDRi per iteration (here: synthetic test tuples and natural test scenes, with the
    compute-matched control beside each retrained separator)."""
    return [{"iteration": r["iteration"], "synthetic_sdri_db": r.get("sdri_db"), "synthetic_si_sdri_db": r.get("si_sdri_db"),
             "natural_sdri_db": r.get("natural_sdri_db"), "natural_sdri_ci95_db": r.get("natural_sdri_ci95_db"),
             "control_natural_sdri_db": r.get("control_natural_sdri_db"),
             "val_natural_sdri_db": r.get("val_natural_sdri_db")} for r in report_out["iterations"]]


def table9_rows(report_out: dict[str, Any]) -> list[dict[str, Any]]:
    """ClearSep Table 9's shape: per iteration, the source clips (scenes) and hours pseudo-labelled, and the
    separated tracks and hours kept at the 10 dB (ITT) and 15 dB (SST) remix thresholds."""
    return [{"iteration": r["iteration"], "source_clips": r.get("scenes_labelled"),
             "source_hours": None if r.get("scene_hours") is None else round(r["scene_hours"], 4),
             "tracks_10db": r.get("kept_itt"), "hours_10db": None if r.get("kept_hours_itt") is None else round(r["kept_hours_itt"], 4),
             "tracks_15db": r.get("kept_sst"), "hours_15db": None if r.get("kept_hours_sst") is None else round(r["kept_hours_sst"], 4)}
            for r in report_out["iterations"] if r.get("candidates") is not None]


LABEL_FREE_KEYS = ("scenes", "candidates", "re_sdr_mean_db", "prop_re_sdr_gt10", "prop_re_sdr_gt15",
                   "clap_target_mean", "judge_overall_mean")


def _gain(g: dict[str, Any] | None) -> str:
    if not g or g.get("gain_db") is None:
        return "n/a"
    ci = g.get("ci95_db")
    return f"{g['gain_db']:+.2f} dB" + (f" (95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}], n = {g['n']})" if ci else f" (n = {g['n']})")


def _headline(report: dict[str, Any]) -> list[str]:
    """The engine's effect on held-out natural scenes and why the cycle stopped."""
    h = report.get("headline")
    if not h:
        return []
    stopped = h.get("stopped") or {}
    return ["## Headline\n",
            f"Held-out natural scenes (split `{h['natural_split']}`), last iteration ({h['iterations']}):\n\n"
            f"- engine gain over its compute-matched control (same init, same steps, synthetic only): "
            f"**{_gain(h.get('gain_vs_control'))}**\n"
            f"- gain over iteration 0 (the bootstrap): {_gain(h.get('gain_vs_iteration0'))}\n"
            f"- the cycle stopped: {stopped.get('reason', 'n/a')} (stop rule on the `{h['stop_split']}` scenes; "
            "the test scenes only report)\n"]


def write_report(root: Path, report: dict[str, Any], last_table: dict[str, np.ndarray] | None) -> dict[str, str]:
    """Write report.json, report.md and plots under `root`; returns the written paths."""
    root = Path(root)
    its = report["iterations"]
    plots = {"sdri": str(plot_sdri(its, root / "plot_sdri.png"))}
    last_filter = report.get("last_filter") or {}
    if last_table:
        plots["histograms"] = str(plot_histograms(last_table, last_filter.get("thresholds", {}), root / "plot_scores.png"))
    if last_filter.get("sweep"):
        plots["sweep"] = str(plot_sweep(last_filter["sweep"], root / "plot_sweep.png"))
    report["plots"] = plots
    atomic_write_text(root / "report.json", json.dumps(report, indent=2, default=float) + "\n")
    md = [f"# stemforge run `{report['name']}`\n",
          f"config hash `{report['config_hash']}`, total {report['total_seconds']:.0f} s "
          f"({'resumed' if report.get('resumed_steps') else 'fresh'}).\n",
          *_headline(report),
          "## Iterations (0 = bootstrap)\n",
          "Row k: separator k evaluated on held-out synthetic tuples and held-out natural scenes (vs audit stems), "
          "and the pseudo-labels separator k produced on the training scenes.\n",
          _table(its, [k for k in ITERATION_KEYS if k not in ("separator_checkpoint", "rejections")]),
          "\n### Rejections per iteration (a candidate failing two filters counts under both)\n",
          _table(its, ["iteration", "rejections"])]
    free = [{"iteration": r["iteration"], **{k: (r.get("label_free") or {}).get(k) for k in LABEL_FREE_KEYS}}
            for r in its if r.get("label_free")]
    if free:
        md += ["\n## Natural scenes without stems: label-free figures\n",
               "**True SDR is unavailable**: the natural scenes of this corpus have no ground-truth stems (give "
               "`corpus.eval` a `stems` import to measure it). Per separator, on the held-out scenes: its pseudo-labels' "
               "remix consistency (per-scene Re-SDR) and the scorers' agreement.\n\n", _table(free, ["iteration", *LABEL_FREE_KEYS])]
    if any(r.get("natural_sdri_ci95_db") is not None or r.get("sdri_ci95_db") is not None for r in its):
        md += ["\n## Evaluation beside SDRi (natural: held-out scenes vs audit stems; plain: synthetic tuples)\n",
               "`*_ci95_db`: 95 % percentile-bootstrap interval of the mean; `*silent_baseline_sdri_db`: the SDRi an "
               "all-zero estimate scores (-SDR(mixture, target)); `*silent_share`: share of present-target queries "
               "answered with silence (estimate >= 60 dB below the mixture).\n\n",
               _table(its, list(EVAL_KEYS))]
        rows, cols = per_class_rows(its)
        if rows:
            md += ["\n### Natural-scene SDRi per target class (per iteration; zero_est = all-zero estimate)\n",
                   _table(rows, cols)]
    if last_filter.get("sweep"):
        md += ["\n## Threshold sweep (judge overall x tier; other filters as configured)\n",
               _table(last_filter["sweep"], ["judge_threshold", "tier", "kept", "hours", "fraction"])]
    payoff = last_filter.get("payoff") or {}
    if payoff.get("available"):
        rows = [{"filter": k, **v} for k, v in payoff["filters"].items()]
        md += ["\n## Which filters pay off (true SDR of tracks vs audit stems)\n",
               "A filter with `gating` false is disabled in this config; its row shows what its threshold *would* keep.\n\n",
               _table(rows, ["filter", "gating", "kept", "dropped", "true_sdr_kept_db", "true_sdr_dropped_db"]),
               "\nPearson correlation of each score with true track SDR: "
               + ", ".join(f"{k} {_fmt(v)}" for k, v in payoff["correlation_with_true_sdr"].items()) + "\n"]
    md += ["\n## SDRi per iteration (ClearSep Table 2's shape)\n", _table(table2_rows(report), list(table2_rows(report)[0]))]
    t9 = table9_rows(report)
    if t9:
        md += ["\n## Data per iteration (ClearSep Table 9's shape: tracks kept at the 10 dB / 15 dB remix thresholds)\n",
               _table(t9, list(t9[0]))]
    if report.get("decisions"):
        md += ["\n## Stop rule, per iteration\n", _table(report["decisions"], ["iteration", "stop", "gain_db", "reason"])]
    cpu = report.get("cpu_timings", {})
    md += ["\n## Step timings (wall and process CPU seconds)\n",
           _table([{"step": k, "seconds": round(v, 1), "cpu_seconds": round(cpu.get(k, float("nan")), 1)} for k, v in report["timings"].items()],
                  ["step", "seconds", "cpu_seconds"])]
    md += ["\n## Plots\n"] + [f"![{k}]({Path(v).name})\n" for k, v in plots.items()]
    atomic_write_text(root / "report.md", "\n".join(md))
    return {"json": str(root / "report.json"), "md": str(root / "report.md"), **plots}
