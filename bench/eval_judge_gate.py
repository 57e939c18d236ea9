"""Can the judge gate? Calibrate a run's judge on its own separator's outputs and score the natural candidates.

On a finished run directory (default runs/demo):
1. `models.judge.separator_ratings.calibrate_judge`: fine-tune the run's judge (`scorers/judge.pt`) on separator-proxy
   ratings of separator_K's outputs for the synthetic *val* tuples (1 in 5 tuples held out), and report its
   correlation on those and on the synthetic *test* store (held-out tuples, never trained on);
2. every natural candidate of filter_K with a true SDR: its track is the stored kept audio (`kept_audio/`) or, for a
   dropped one, re-separated with separator_K exactly as the pseudo-labeller made it (`engine.review.media.
   reseparate`); the new judge scores (scene, track, positive_text) as the filter's `score_judge` stage does;
3. old (`judge_overall` in the table) vs new judge overall: Pearson / Spearman with `true_sdr_db` (CLAP target and
   Re-SDR for reference), mean true SDR of tracks kept vs dropped by the judge rule alone at the configured
   `filters.judge_min`, and at a threshold chosen on the candidates of even-numbered scenes and reported on the odd
   ones only (never tuned on what is reported): the threshold maximising the kept mean true SDR among those that keep
   at least `--min-keep` of the even split. Also the run's combined decision with the new judge gating.

    .venv/bin/python bench/eval_judge_gate.py --run runs/demo --steps 300 --out docs/perf/judge_gate.md
    .venv/bin/python bench/eval_judge_gate.py --steps 600 --train-tuples 400 --natural-val   # the widest calibration

Re-separated tracks are cached in `--work` (default /tmp/eval_judge_gate/<run name>) so a rerun with other
calibration settings does not separate again.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.review.media import kept_tracks, reseparate  # noqa: E402
from engine.review.run_data import load_run  # noqa: E402
from models.judge.scorer import MiniJudgeScorer  # noqa: E402
from pipelines.filters.judge import other_labels  # noqa: E402
from models.judge.separator_ratings import calibrate_judge  # noqa: E402


def natural_val_samples(run, split: str = "val") -> list[dict[str, Any]]:
    """The run's natural `split` scenes with stems, as the engine's judge_K step takes them."""
    from engine.judge_calibration import natural_truth_items
    from engine.steps import natural_eval_set

    natural = natural_eval_set(json.loads((run.root / "steps" / "corpus.json").read_text())["outputs"])
    return natural_truth_items(natural["scenes"], natural["audit"], split, int(run.cfg.audio.sample_rate))


def corr(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) < 1e-12:
        return {"pearson": float("nan"), "spearman": float("nan"), "n": int(ok.sum())}
    return {"pearson": float(stats.pearsonr(x[ok], y[ok])[0]), "spearman": float(stats.spearmanr(x[ok], y[ok])[0]),
            "n": int(ok.sum())}


def payoff(score: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, Any]:
    kept = score >= threshold
    return {"threshold": float(threshold), "kept": int(kept.sum()), "dropped": int((~kept).sum()),
            "true_sdr_kept_db": float(truth[kept].mean()) if kept.any() else None,
            "true_sdr_dropped_db": float(truth[~kept].mean()) if (~kept).any() else None}


def choose_threshold(score: np.ndarray, truth: np.ndarray, min_keep: float) -> float:
    """Among thresholds on a 0.05 grid keeping >= `min_keep` of the items, the one with the highest kept mean."""
    best, best_mean = float(np.min(score)), -np.inf
    for t in np.arange(1.0, 5.0001, 0.05):
        kept = score >= t
        if kept.mean() >= min_keep and truth[kept].mean() > best_mean:
            best, best_mean = float(t), float(truth[kept].mean())
    return best


def scene_index(scene_id: str) -> int:
    m = re.search(r"(\d+)$", scene_id)
    if not m:
        raise ValueError(f"scene id {scene_id!r} has no trailing number to split even/odd on")
    return int(m.group(1))


def candidate_tracks(it, run, rows: list[dict[str, Any]], cache: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(scene_id -> mixture, candidate_id -> track): stored kept tracks, the rest re-separated (cached as .npz)."""
    from storage.audio import load_audio

    sr = int(run.cfg.audio.sample_rate)
    mixtures = {r["scene_id"]: load_audio(r["scene_path"], run.cfg.audio) for r in rows}
    ids = {r["candidate_id"] for r in rows}
    stored = kept_tracks(it.filter_root, ids)
    cache_file = cache / f"reseparated_it{it.iteration}_{it.separator.get('checkpoint_hash')}.npz"
    made: dict[str, np.ndarray] = {}
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            made = {k: z[k] for k in z.files}
    missing = [r for r in rows if r["candidate_id"] not in stored and r["candidate_id"] not in made]
    if missing:
        t0 = time.time()
        pl = run.cfg.pseudo_label
        made.update(reseparate(it.separator.get("checkpoint") or "", missing, mixtures, sr, pl.window_s, pl.overlap_s))
        print(f"re-separated {len(missing)} dropped candidates in {time.time() - t0:.0f} s", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, **made)
    return mixtures, {**made, **stored}


def score_new(ckpt: str, rows: list[dict[str, Any]], mixtures: dict[str, np.ndarray], tracks: dict[str, np.ndarray],
              sr: int, batch: int = 16) -> np.ndarray:
    scorer = MiniJudgeScorer(ckpt, "cpu", batch)
    out = np.full(len(rows), np.nan)
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        mix = [mixtures[r["scene_id"]] for r in chunk]
        trk = [tracks[r["candidate_id"]][:len(m)] for r, m in zip(chunk, mix)]
        others = other_labels({c: [r[c] for r in chunk] for c in ("scene_labels", "positive_labels")})
        out[i:i + len(chunk)] = scorer.score(mix, trk, [r["positive_text"] for r in chunk], sr, others=others)["overall"]
    return out


def fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else (f"{x:.2f}" if isinstance(x, float) else str(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--iteration", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300, help="calibration fine-tuning steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip-s", type=float, default=None, help="training crop seconds (default judge.clip_seconds)")
    ap.add_argument("--train-tuples", type=int, default=0,
                    help="also calibrate on this many synthetic *train* tuples (separator_0 trained on them)")
    ap.add_argument("--natural-val", action="store_true",
                    help="also calibrate on the natural val scenes with audit stems (not the candidates' scenes)")
    ap.add_argument("--min-keep", type=float, default=0.15, help="least share kept when choosing the threshold")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="cache + calibrated checkpoint folder")
    ap.add_argument("--out", default=None, help="markdown report (JSON beside it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    if run.report is None:
        print(f"note: {run.root}/report.json absent: the run is not finished (iteration {args.iteration} may still be)")
    its = {it.iteration: it for it in run.iterations}
    if args.iteration not in its:
        raise SystemExit(f"{run.root}: no finished filter_{args.iteration}")
    it = its[args.iteration]
    work = Path(args.work or f"/tmp/eval_judge_gate/{run.name}")
    work.mkdir(parents=True, exist_ok=True)
    sr = int(run.cfg.audio.sample_rate)
    judge_ckpt = run.scorers["judge"]["checkpoint"]
    sep_ckpt = it.separator["checkpoint"]
    syn = json.loads((run.root / "steps" / "synthetic.json").read_text())["outputs"]["dirs"]

    t0 = time.time()
    stores = [syn["val"]] + ([syn["train"]] if args.train_tuples else [])
    extra = natural_val_samples(run) if args.natural_val else []
    cal = calibrate_judge(judge_ckpt, sep_ckpt, stores, run.cfg.judge, args.steps, args.seed,
                          work / f"judge_cal_it{args.iteration}.pt", heldout_dirs=[syn["test"]],
                          max_tuples=args.train_tuples or None, clip_s=args.clip_s, extra_samples=extra)
    print(f"calibrated in {time.time() - t0:.0f} s: held-out tuples overall PCC "
          f"{cal['heldout']['axes']['overall']['pcc']:.3f}, test store {cal['test']['axes']['overall']['pcc']:.3f}", flush=True)

    t = it.table
    truth_all = np.asarray(t["true_sdr_db"], dtype=np.float64)
    idx = [i for i in range(len(truth_all)) if np.isfinite(truth_all[i])]
    rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in t.items()} for i in idx]
    mixtures, tracks = candidate_tracks(it, run, rows, work)
    new = score_new(cal["checkpoint"], rows, mixtures, tracks, sr)
    truth = truth_all[idx]
    old = np.asarray(t["judge_overall"], dtype=np.float64)[idx]
    columns = {"judge_old": old, "judge_new": new,
               "clap_target": np.asarray(t["clap_target"], dtype=np.float64)[idx],
               "re_sdr_db": np.asarray(t["re_sdr_db"], dtype=np.float64)[idx]}
    odd = np.array([scene_index(r["scene_id"]) % 2 == 1 for r in rows])
    jmin = float(run.cfg.filters.judge_min)
    res: dict[str, Any] = {"run": str(run.root), "iteration": args.iteration, "candidates": len(rows),
                           "args": vars(args),
                           "odd_scene_candidates": int(odd.sum()), "judge_min": jmin, "calibration": {
                               k: v for k, v in cal.items() if k != "history"},
                           "correlation_all": {k: corr(v, truth) for k, v in columns.items()},
                           "correlation_odd": {k: corr(v[odd], truth[odd]) for k, v in columns.items()}}
    gate: dict[str, Any] = {}
    keep_rest = np.asarray(t["keep"], dtype=bool)[idx]
    for name in ("judge_old", "judge_new"):
        s = columns[name]
        thr = choose_threshold(s[~odd], truth[~odd], args.min_keep)
        gate[name] = {"at_judge_min_all": payoff(s, truth, jmin), "at_judge_min_odd": payoff(s[odd], truth[odd], jmin),
                      "chosen_on_even": thr, "at_chosen_odd": payoff(s[odd], truth[odd], thr),
                      "run_decision_plus_judge_at_chosen_odd": payoff(np.where(keep_rest, s, -np.inf)[odd], truth[odd], thr)}
    gate["run_decision_without_judge_odd"] = payoff(keep_rest[odd].astype(float), truth[odd], 0.5)
    res["gate"] = gate
    kinds = cal["test"].get("per_kind_mean_overall", {})
    lines = [f"# Judge gate on `{run.root.name}` iteration {args.iteration}", "",
             f"Calibration: {cal['steps']} steps on separator-proxy ratings of {cal['tuples'] - len(extra)} synthetic "
             f"tuples (val{f' + {args.train_tuples} train' if args.train_tuples else ''})"
             f"{f' + {len(extra)} natural val items' if extra else ''} ({cal['examples']} estimates), "
             f"{cal['seconds']:.0f} s; checkpoint `{cal['checkpoint_hash']}`.", "",
             "| held-out tuples | n | overall PCC | overall vs SDR PCC | recall PCC | precision PCC | faithfulness PCC |",
             "|---|---|---|---|---|---|---|"]
    for name in ("heldout", "test"):
        h = cal[name]
        if h.get("n"):
            a = h["axes"]
            lines.append(f"| {name} | {h['n']} | {fmt(a['overall']['pcc'])} | {fmt(h['overall_vs_sdr']['pcc'])} | "
                         f"{fmt(a['recall']['pcc'])} | {fmt(a['precision']['pcc'])} | {fmt(a['faithfulness']['pcc'])} |")
    lines += ["", "Test-store mean predicted overall per estimate kind: "
              + ", ".join(f"{k} {v:.2f}" for k, v in kinds.items()), "",
              f"## Natural candidates ({len(rows)}; odd scenes {int(odd.sum())})", "",
              "| score | Pearson (all) | Spearman (all) | Pearson (odd) | Spearman (odd) |", "|---|---|---|---|---|"]
    for k in columns:
        a, o = res["correlation_all"][k], res["correlation_odd"][k]
        lines.append(f"| {k} | {fmt(a['pearson'])} | {fmt(a['spearman'])} | {fmt(o['pearson'])} | {fmt(o['spearman'])} |")
    lines += ["", "| judge | rule | set | kept | true SDR kept | dropped | true SDR dropped |", "|---|---|---|---|---|---|---|"]
    for name in ("judge_old", "judge_new"):
        g = gate[name]
        for label, key, where in ((f">= {jmin} (judge_min)", "at_judge_min_all", "all"),
                                  (f">= {jmin} (judge_min)", "at_judge_min_odd", "odd"),
                                  (f">= {g['chosen_on_even']:.2f} (chosen on even)", "at_chosen_odd", "odd"),
                                  (f"run decision + >= {g['chosen_on_even']:.2f}", "run_decision_plus_judge_at_chosen_odd",
                                   "odd")):
            p = g[key]
            lines.append(f"| {name} | {label} | {where} | {p['kept']} | {fmt(p['true_sdr_kept_db'])} | {p['dropped']} | "
                         f"{fmt(p['true_sdr_dropped_db'])} |")
    p = gate["run_decision_without_judge_odd"]
    lines.append(f"| - | run decision (judge off) | odd | {p['kept']} | {fmt(p['true_sdr_kept_db'])} | {p['dropped']} | "
                 f"{fmt(p['true_sdr_dropped_db'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
