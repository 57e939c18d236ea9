"""`build_review(run_dir)`: the run's static review page, `runs/<name>/review/index.html`, and its media.

Layout written (the whole folder is built beside the old one and swapped in, so a reader never sees half a page
and a rebuild leaves no stale excerpts):
```
review/index.html                       the page: script, style and data inline
review/plots/*.png                      the run report's plots (copies)
review/media/it<K>/<id>-{mix,track,res}.wav|.png   excerpts and spectrogram thumbnails of the sampled candidates
```
Bounded size: only the sampled candidates (per iteration at most 2 x `per_filter` per filter) get media; the
candidate table is embedded as JSON up to `max_rows` rows per iteration (beyond that a seeded uniform sample that
always holds the sampled candidates, and the page scales its counts and says so).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from engine.review.media import FORMATS, excerpt_window, kept_tracks, reseparate, safe_name, write_clip, write_thumbnail
from engine.review.page import render, static_html
from engine.review.run_data import IterationData, ReviewError, RunData, load_run
from engine.review.sample import Pick, sample_near_threshold
from storage.atomic import atomic_write_text

DEFAULT_PER_FILTER = 3
DEFAULT_EXCERPT_S = 4.0
DEFAULT_MAX_ROWS = 20_000

NUMBER_COLUMNS = ("gain_db", "duration_s", "re_sdr_db", "re_sisdr_db", "re_min_db", "clap_target", "clap_residual",
                  "pc_target", "silence_ratio", "judge_overall", "rerank_score", "true_sdr_db")
TEXT_COLUMNS = ("candidate_id", "scene_id", "label", "positive_text", "negative_text", "query_mode", "tier", "reasons")
ITERATION_STATS = ("candidates", "kept_itt", "kept_sst", "kept_hours_itt", "kept_hours_sst", "re_sdr_mean_db",
                   "prop_re_sdr_gt15", "rejections")


def _value(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _rel(path: str | os.PathLike[str] | None, start: Path) -> str | None:
    return None if not path else os.path.relpath(Path(path).resolve(), start)


def table_json(it: IterationData, run: RunData, picks: list[Pick], max_rows: int, seed: int) -> dict[str, Any]:
    """The candidates table's page columns (columnar), capped at `max_rows` rows."""
    n = it.size
    rows = np.arange(n)
    if n > max_rows:
        must = sorted({p.row for p in picks})[:max_rows]
        rest = np.setdiff1d(rows, must)
        extra = np.random.default_rng([seed, it.iteration, 7]).choice(rest, max_rows - len(must), replace=False)
        rows = np.sort(np.concatenate([np.asarray(must, dtype=int), extra]).astype(int))
    t = it.table
    cols: dict[str, list[Any]] = {}
    for c in TEXT_COLUMNS + NUMBER_COLUMNS:
        if c in t:
            cols[c] = [_value(t[c][i]) for i in rows]
    for c in ["keep", *sorted(k for k in t if k.startswith("keep_"))]:
        if c in t:
            cols[c] = [bool(t[c][i]) for i in rows]
    scenes = [str(s) for s in cols.get("scene_id", [])]
    cols["split"] = [run.split_of.get(s, "") for s in scenes]
    train = set(run.training_splits)
    cols["training"] = [not run.split_of or run.split_of.get(s) in train for s in scenes]
    return {"rows_total": n, "rows": int(len(rows)), "capped": bool(n > len(rows)), "columns": list(cols), "data": cols}


def _row(it: IterationData, i: int) -> dict[str, Any]:
    return {k: _value(v[i]) for k, v in it.table.items()}


def write_media(it: IterationData, run: RunData, rows: list[int], out: Path, *, excerpt_s: float,
                audio_format: str) -> dict[str, Any]:
    """Excerpts and thumbnails of the given table rows under `out/media/it<K>/`; candidate_id -> page entry."""
    from storage.audio import load_audio

    if not rows:
        return {}
    sr = int(run.cfg.audio.sample_rate)
    records = [_row(it, i) for i in rows]
    mixtures: dict[str, np.ndarray] = {}
    for r in records:
        if r["scene_id"] not in mixtures:
            path = r.get("scene_path")
            if not path or not Path(path).is_file():
                raise ReviewError(f"{path}: scene audio of candidate {r['candidate_id']} (iteration {it.iteration}) is missing")
            mixtures[r["scene_id"]] = load_audio(path, run.cfg.audio)
    stored = kept_tracks(it.filter_root, {r["candidate_id"] for r in records})
    pl = run.cfg.pseudo_label
    missing = [r for r in records if r["candidate_id"] not in stored]
    made = reseparate(it.separator.get("checkpoint") or "", missing, mixtures, sr, pl.window_s, pl.overlap_s)
    ext = FORMATS[audio_format][2]
    folder = out / "media" / f"it{it.iteration}"
    folder.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    written: set[str] = set()
    for r in records:
        cid = r["candidate_id"]
        mix = mixtures[r["scene_id"]]
        track = stored.get(cid, made.get(cid))
        m = min(len(mix), len(track))
        mix, track = mix[:m], track[:m]
        a, b = excerpt_window(track, sr, excerpt_s)
        mix_name = f"{safe_name(r['scene_id'])}-{a}-mix"  # one mixture excerpt per scene and window
        cand = safe_name(cid)
        entry: dict[str, Any] = {"start_s": a / sr, "seconds": (b - a) / sr,
                                 "source": "kept_audio" if cid in stored else "re-separated"}
        for role, name, audio in (("mixture", mix_name, mix[a:b]), ("track", f"{cand}-track", track[a:b]),
                                  ("residual", f"{cand}-res", (mix - track)[a:b])):
            if name not in written:
                write_clip(audio, sr, folder / f"{name}{ext}", audio_format)
                write_thumbnail(audio, folder / f"{name}.png")
                written.add(name)
            entry[role] = {"audio": f"media/it{it.iteration}/{name}{ext}", "image": f"media/it{it.iteration}/{name}.png"}
        entries[cid] = entry
    return entries


def iteration_json(it: IterationData, run: RunData, out: Path, *, per_filter: int, seed: int, excerpt_s: float,
                   max_rows: int, audio_format: str) -> dict[str, Any]:
    picks = sample_near_threshold(it.table, it.rules, per_filter, seed, it.iteration)
    rows = sorted({p.row for p in picks})
    media = write_media(it, run, rows, out, excerpt_s=excerpt_s, audio_format=audio_format)
    ids = it.table.get("candidate_id", [])
    scene_paths: dict[str, str] = {}
    for sid, path in zip(it.table.get("scene_id", []), it.table.get("scene_path", [])):
        scene_paths.setdefault(str(sid), _rel(path, out) or "")
    return {
        "iteration": it.iteration,
        "rules": [{"name": r.name, "column": r.column, "op": r.op, "threshold": r.threshold, "reason": r.reason,
                   "enabled": r.enabled} for r in it.rules],
        "itt_min_db": it.thresholds.get("itt_min_db"), "sst_min_db": it.thresholds.get("sst_min_db"),
        "remix_enabled": bool((it.thresholds.get("enabled") or {}).get("remix", True)),
        "stats": {k: it.stats.get(k) for k in ITERATION_STATS},
        "lineage": {"separator": {"checkpoint": _rel(it.separator.get("checkpoint"), run.root),
                                  "checkpoint_hash": it.separator.get("checkpoint_hash")},
                    "scorers": run.scorers, "filter_marker": f"steps/filter_{it.iteration}.json",
                    "table": _rel(it.stats.get("candidates_table"), run.root)},
        "scenes": {s: {"href": p, "split": run.split_of.get(s, "")} for s, p in sorted(scene_paths.items())},
        "samples": [{"rule": p.rule, "side": p.side, "candidate_id": str(ids[p.row]), "distance": p.distance} for p in picks],
        "media": media,
        "table": table_json(it, run, picks, max_rows, seed),
    }


def _iteration_rows(run: RunData) -> list[dict[str, Any]]:
    if run.report and run.report.get("iterations"):
        return run.report["iterations"]
    return [{"iteration": it.iteration, "separator_hash": it.separator.get("checkpoint_hash"),
             **{k: it.stats.get(k) for k in ITERATION_STATS}} for it in run.iterations]


def _copy_plots(run: RunData, out: Path) -> dict[str, str]:
    plots = (run.report or {}).get("plots") or {}
    paths = {k: Path(v) for k, v in plots.items()} or {p.stem.removeprefix("plot_"): p for p in sorted(run.root.glob("plot_*.png"))}
    copied = {}
    for title, src in paths.items():
        src = src if src.is_absolute() else run.root / src
        if src.is_file():
            (out / "plots").mkdir(exist_ok=True)
            shutil.copyfile(src, out / "plots" / src.name)
            copied[title] = f"plots/{src.name}"
    return copied


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` (a folder) by `tmp` with two renames; the old folder is removed afterwards."""
    old = final.with_name(f".{final.name}-old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def build_review(run_dir: str | os.PathLike[str], *, per_filter: int = DEFAULT_PER_FILTER, seed: int = 0,
                 excerpt_s: float = DEFAULT_EXCERPT_S, max_rows: int = DEFAULT_MAX_ROWS, audio_format: str = "wav") -> Path:
    """Build (or rebuild) `<run_dir>/review/index.html` from what the run wrote; returns its path.

    `per_filter`: kept and dropped candidates shown per filter and iteration (each side); `seed` picks them among
    the nearest to the threshold; `excerpt_s`: excerpt length; `max_rows`: table rows embedded per iteration."""
    if audio_format not in FORMATS:
        raise ValueError(f"audio_format must be one of {sorted(FORMATS)}, got {audio_format!r}")
    if max_rows < 1 or excerpt_s <= 0:
        raise ValueError(f"max_rows must be >= 1 and excerpt_s > 0 (got {max_rows}, {excerpt_s})")
    run = load_run(run_dir)
    final = run.root / "review"
    tmp = run.root / f".review-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        data = {"run": {"name": run.name, "config_hash": run.config_hash},
                "settings": {"per_filter": per_filter, "seed": seed, "excerpt_s": excerpt_s, "max_rows": max_rows,
                             "audio_format": audio_format},
                "iterations": [iteration_json(it, run, tmp, per_filter=per_filter, seed=seed, excerpt_s=excerpt_s,
                                              max_rows=max_rows, audio_format=audio_format) for it in run.iterations]}
        static = static_html(run.name, run.config_hash, run.report, _iteration_rows(run), _copy_plots(run, tmp))
        atomic_write_text(tmp / "index.html", render(f"stemforge review: {run.name}", static, data))
        for f in tmp.rglob("*"):  # a page to share: atomic writes create owner-only files
            if f.is_file():
                os.chmod(f, 0o644)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / "index.html"
