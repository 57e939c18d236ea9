"""The final separator and judge, and the release folder `runs/<name>/final/` (the `train_final` flow's steps).

Why a separate stage after the cycle: the cycle's separators are trained to *make data* (short budgets, a
compute-matched control beside each); once the stop rule ends the cycle, the data it made is fixed and one longer
fit turns it into the model a team ships. The release is self-describing: checkpoints, a model card whose lineage
(shard index hashes, thresholds, iterations and their figures, code version) is read from the run's own markers, and
the evaluation tables of the same evaluator the run reports with.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from engine.workspace import RunError, Workspace
from storage.atomic import atomic_write_text

log = logging.getLogger("stemforge.run")

RELEASE_FILES = ("separator.pt", "judge.pt", "model_card.md", "model_card.json", "evaluation.json", "evaluation.md")


def final_separator_config(cfg: Any) -> tuple[Any, bool]:
    """(config the final separator trains with, whether it fine-tunes the cycle's last separator)."""
    fcfg = cfg.engine.final
    preset = cfg.separator.preset if fcfg.preset == "same" else fcfg.preset
    if preset == cfg.separator.preset:
        return cfg, True
    if preset == "clapsep" and not cfg.separator.clap_checkpoint:
        raise RunError("engine.final.preset: clapsep needs separator.clap_checkpoint (a local 630k-best.pt)")
    return cfg.model_copy(update={"separator": cfg.separator.model_copy(update={"preset": preset})}), False


def train_final_judge(ws: Workspace, cfg: Any, judge: dict[str, Any], sources: str) -> dict[str, Any]:
    """Fine-tune the run's judge for `engine.final.judge_steps` on human ratings (`engine.final.judge_ratings`) or,
    without a table, on proxy ratings; evaluated on the held-out clips (proxy) or the held-out ratings (human)."""
    from models.judge.checkpoint import load_model
    from models.judge.features import resolve_device
    from models.judge.train import (FORMAT, MODEL_KEYS, VERSION, build_model, evaluate_proxy, finetune_ratings,
                                    rating_batch, save_judge)
    from engine.model_steps import _label_texts, _source_pools, capped

    jc = capped(cfg, "judge")
    device = resolve_device(jc.device)
    model, _ = load_model(judge["checkpoint"], FORMAT, VERSION, MODEL_KEYS, build_model, "judge", "stemforge train judge")
    steps = int(cfg.engine.final.judge_steps)
    table = cfg.engine.final.judge_ratings
    if table:
        from models.judge.human_ratings import evaluate_human, finetune_human, load_ratings, split_ratings

        ratings = load_ratings(table, jc.sample_rate)
        r_train, r_held = split_ratings(ratings, 0.2, jc.seed)
        finetune_human(model, r_train, jc, device, steps=steps)
        metrics = evaluate_human(model, r_held, jc, device) if len(r_held) else {"n": 0, "axes": {}}
        targets = {"targets": "human", "ratings": str(Path(table).resolve()), "rows": len(ratings)}
    else:
        train, held = _source_pools(sources, jc.sample_rate, jc.max_clips, jc.seed)
        texts = _label_texts(sorted(set(train.labels) | set(held.labels)))
        finetune_ratings(model, lambda rng: rating_batch(train, rng, jc, texts), steps, jc, device)
        metrics = evaluate_proxy(model, held, jc, device, texts)
        targets = {"targets": "proxy", "note": "PROXY ratings derived from ground truth of deliberately degraded "
                                                "outputs (models/judge/proxy_ratings.py), not human ratings"}
    out = ws.path("final_judge", "judge.pt")
    sha = save_judge(out, model, jc, meta={**targets, "heldout": metrics, "init": judge["checkpoint_hash"]})
    return {"checkpoint": str(out), "checkpoint_hash": sha[:16], "steps": steps, "init": judge["checkpoint_hash"],
            **targets, "heldout": metrics}


def _tier_lineage(tier: dict[str, Any]) -> dict[str, Any]:
    """A tier's stores in the model card: the newest with its index hash, accumulated earlier ones under `earlier`."""
    from engine.model_steps import tier_dirs

    dirs = tier_dirs(tier)
    out = {"dir": dirs[0], "index_hash": _index_hash(dirs[0]), "count": tier["count"], "hours": tier["hours"]}
    if len(dirs) > 1:
        out["earlier"] = [{"dir": d, "index_hash": _index_hash(d)} for d in dirs[1:]]
    return out


def _index_hash(store: str | Path) -> str | None:
    """sha256 of a shard store's manifest (its shards with their sizes and hashes, storage/shards/store.py) plus
    its per-shard member indexes: the data's identity, checked by `stemforge shards verify`."""
    from storage.shards.index import index_dir
    from storage.shards.store import MANIFEST_FILE

    manifest = Path(store) / MANIFEST_FILE
    if not manifest.is_file():
        return None
    h = hashlib.sha256(manifest.read_bytes())
    for part in sorted(index_dir(store).glob("*.parquet")):
        h.update(part.name.encode())
        h.update(part.read_bytes())
    return h.hexdigest()[:16]


def _copy(src: str | Path, dst: Path) -> str:
    from models.separator.atomic_copy import copy_atomic

    copy_atomic(Path(src), dst)
    return hashlib.sha256(dst.read_bytes()).hexdigest()


def write_release(root: Path, cfg: Any, config_hash: str, report: dict[str, Any], separator: dict[str, Any],
                  judge: dict[str, Any], evaluation: dict[str, Any], tiers: dict[str, Any],
                  synthetic: dict[str, Any], tiers_from: str) -> dict[str, Any]:
    """`<run>/final/`: separator.pt, judge.pt, model_card.{md,json}, evaluation.{json,md}; each file written
    atomically, the card last (a folder with a card is a complete release)."""
    from storage.version import code_version

    out = root / "final"
    out.mkdir(parents=True, exist_ok=True)
    sep_sha = _copy(separator["checkpoint"], out / "separator.pt")
    judge_sha = _copy(judge["checkpoint"], out / "judge.pt")
    eval_keys = ("sdri_db", "si_sdri_db", "sdri_ci95_db", "silent_baseline_sdri_db", "silence_sdr_db",
                 "natural_sdri_db", "natural_si_sdri_db", "natural_sdri_ci95_db", "natural_silent_baseline_sdri_db",
                 "natural_items", "natural_truth", "label_free")
    base = next(r for r in report["iterations"] if r["separator_hash"] == separator.get("init")) \
        if separator.get("init") else report["iterations"][-1]
    ev = {"separator": {k: evaluation.get(k) for k in eval_keys},
          "init_iteration": {k: base.get(k) for k in ("iteration", "sdri_db", "natural_sdri_db", "natural_sdri_ci95_db")},
          "gain_vs_init_iteration": separator.get("gain_vs_init"),
          "judge": {"targets": judge["targets"], "heldout": judge["heldout"]},
          "natural_split": cfg.engine.natural_eval_split}
    atomic_write_text(out / "evaluation.json", json.dumps(ev, indent=2, default=float) + "\n")
    atomic_write_text(out / "evaluation.md", _evaluation_md(ev))
    card = {
        "name": root.name, "config_hash": config_hash, "code_version": code_version(),
        "separator": {"file": "separator.pt", "sha256": sep_sha, "weights_hash": separator["checkpoint_hash"],
                      "preset": separator["preset"], "steps": separator["steps"], "init": separator.get("init"),
                      "train_weights": separator.get("weights")},
        "judge": {"file": "judge.pt", "sha256": judge_sha, "weights_hash": judge["checkpoint_hash"],
                  "targets": judge["targets"], "note": judge.get("note"), "steps": judge["steps"],
                  "init": judge["init"]},
        "data": {"synthetic": {s: {"dir": d, "index_hash": _index_hash(d), "count": synthetic["counts"].get(s)}
                               for s, d in synthetic["dirs"].items()},
                 "tiers": {t: _tier_lineage(v) for t, v in tiers.items()},
                 "tiers_from": tiers_from, "corpus": report.get("corpus")},
        "thresholds": (report.get("last_filter") or {}).get("thresholds"),
        "iterations": [{k: r.get(k) for k in ("iteration", "separator_hash", "sdri_db", "natural_sdri_db",
                                               "natural_sdri_ci95_db", "val_natural_sdri_db", "kept_itt", "kept_sst",
                                               "control_natural_sdri_db")} for r in report["iterations"]],
        "stopped": (report.get("headline") or {}).get("stopped"),
        "evaluation": "evaluation.json",
    }
    atomic_write_text(out / "model_card.json", json.dumps(card, indent=2, default=float) + "\n")
    atomic_write_text(out / "model_card.md", _card_md(card, ev))
    for f in RELEASE_FILES:  # a release is for sharing: readable by others (temp files are created 0600)
        (out / f).chmod(0o644)
    return {"dir": str(out), "files": {f: str(out / f) for f in RELEASE_FILES}, "separator_sha256": sep_sha,
            "judge_sha256": judge_sha}


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _evaluation_md(ev: dict[str, Any]) -> str:
    s, last = ev["separator"], ev["init_iteration"]
    lines = ["# Final evaluation", "", "| model | synthetic SDRi dB | natural SDRi dB | 95% CI | all-silent baseline dB |",
             "|---|---|---|---|---|",
             f"| final separator | {_fmt(s['sdri_db'])} | {_fmt(s['natural_sdri_db'])} | {_fmt(s['natural_sdri_ci95_db'])} | "
             f"{_fmt(s['natural_silent_baseline_sdri_db'])} |",
             f"| iteration {last['iteration']} (the final's start: best on validation) | {_fmt(last['sdri_db'])} | {_fmt(last['natural_sdri_db'])} | "
             f"{_fmt(last['natural_sdri_ci95_db'])} | |", ""]
    g = ev.get("gain_vs_init_iteration") or {}
    if g:
        lines += [f"Final over iteration {last['iteration']} (paired, {g.get('n')} natural queries of the {ev['natural_split']} "
                  f"split): {_fmt(g.get('gain_db'))} dB, 95% CI {_fmt(g.get('ci95_db'))}.", ""]
    if s.get("natural_truth") is False:
        lf = s.get("label_free") or {}
        lines += ["True SDR unavailable: no ground-truth stems. Label-free figures of the held-out scenes: "
                  f"Re-SDR mean {_fmt(lf.get('re_sdr_mean_db'))} dB, share > 10 dB {_fmt(lf.get('prop_re_sdr_gt10'))}, "
                  f"> 15 dB {_fmt(lf.get('prop_re_sdr_gt15'))}, CLAP {_fmt(lf.get('clap_target_mean'))}, "
                  f"judge {_fmt(lf.get('judge_overall_mean'))}.", ""]
    j = ev["judge"]
    lines += [f"## Judge ({j['targets']} ratings)", "", "| axis | PCC | SRCC | MAE |", "|---|---|---|---|"]
    for axis, m in (j["heldout"].get("axes") or {}).items():
        lines.append(f"| {axis} | {_fmt(m.get('pcc'))} | {_fmt(m.get('srcc'))} | {_fmt(m.get('mae'))} |")
    return "\n".join(lines) + "\n"


def _card_md(card: dict[str, Any], ev: dict[str, Any]) -> str:
    sep, judge, data = card["separator"], card["judge"], card["data"]
    lines = [f"# Model card: `{card['name']}` final separator and judge", "",
             f"Config `{card['config_hash']}`, code `{card['code_version']}`.", "",
             "## Separator", "",
             f"- `separator.pt` (sha256 `{sep['sha256'][:16]}`, weights `{sep['weights_hash']}`), preset `{sep['preset']}`, "
             f"{sep['steps']} optimiser steps, " + (f"fine-tuned from `{sep['init']}`" if sep.get("init") else "from scratch"),
             f"- training mixture weights: {sep.get('train_weights')}", "",
             "## Judge", "",
             f"- `judge.pt` (sha256 `{judge['sha256'][:16]}`), fine-tuned {judge['steps']} steps from `{judge['init']}` on "
             f"**{judge['targets']} ratings**" + (f" ({judge['note']})" if judge.get("note") else ""), "",
             "## Data lineage", "", "| data | dir | index hash | items |", "|---|---|---|---|"]
    for split, d in data["synthetic"].items():
        lines.append(f"| synthetic {split} | `{d['dir']}` | `{d['index_hash']}` | {d['count']} |")
    for tier, d in data["tiers"].items():
        lines.append(f"| tier {tier} ({data['tiers_from']}) | `{d['dir']}` | `{d['index_hash']}` | {d['count']} |")
        for e in d.get("earlier", []):
            lines.append(f"| tier {tier}, an earlier iteration's | `{e['dir']}` | `{e['index_hash']}` | |")
    lines += ["", f"Thresholds: `{json.dumps(card['thresholds'])}`", "", "## Iterations", "",
              "| iteration | separator | synthetic SDRi | natural SDRi | 95% CI | control | kept ITT/SST |",
              "|---|---|---|---|---|---|---|"]
    for r in card["iterations"]:
        lines.append(f"| {r['iteration']} | `{r['separator_hash']}` | {_fmt(r['sdri_db'])} | {_fmt(r['natural_sdri_db'])} | "
                     f"{_fmt(r['natural_sdri_ci95_db'])} | {_fmt(r.get('control_natural_sdri_db'))} | "
                     f"{_fmt(r.get('kept_itt'))}/{_fmt(r.get('kept_sst'))} |")
    stopped = card.get("stopped") or {}
    lines += ["", f"Stopped: {stopped.get('reason', 'n/a')}", "", "## Evaluation", "", _evaluation_md(ev)]
    return "\n".join(lines) + "\n"
