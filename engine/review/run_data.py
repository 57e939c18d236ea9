"""A finished (or partly finished) run directory, read for the review page: only files the run already wrote.

What is read: `config.resolved.yaml` (audio and pseudo-label settings), the step markers `steps/filter_K.json`
(thresholds, table and kept-audio locations), `steps/separator_K.json` and `steps/scorer_*.json` (checkpoint hashes
for the lineage), `steps/corpus.json` (the scene manifest: which split each scene is in) and, when present,
`report.json` (the iteration table and plots). Nothing is recomputed here; a missing or unreadable file raises
`ReviewError` naming it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.engine_steps import THRESHOLD_KEYS
from engine.review.sample import RuleSpec



class ReviewError(RuntimeError):
    """The run directory cannot be reviewed; the message names the file and the problem."""


@dataclass
class IterationData:
    """One filter step's candidates and everything the page says about where they came from."""

    iteration: int
    table: dict[str, np.ndarray]
    stats: dict[str, Any]
    rules: list[RuleSpec]
    thresholds: dict[str, Any]
    separator: dict[str, Any]
    filter_root: Path

    @property
    def size(self) -> int:
        return len(self.table.get("candidate_id", []))


@dataclass
class RunData:
    root: Path
    name: str
    config_hash: str
    cfg: Any
    report: dict[str, Any] | None
    iterations: list[IterationData]
    scorers: dict[str, dict[str, Any]]
    split_of: dict[str, str] = field(default_factory=dict)
    training_splits: tuple[str, ...] = ()


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReviewError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise ReviewError(f"{path}: unreadable JSON ({exc})") from exc


def _outputs(root: Path, step: str) -> dict[str, Any] | None:
    marker = root / "steps" / f"{step}.json"
    return _json(marker).get("outputs") if marker.is_file() else None


def rules_of(thresholds: dict[str, Any]) -> list[RuleSpec]:
    """The filter step's rules (the project's own `all_rules`) rebuilt from the thresholds its marker recorded."""
    from pipelines.filters import FilterConfig, all_rules

    enabled = thresholds.get("enabled") or {}
    cfg = FilterConfig.model_validate({**{k: thresholds[k] for k in THRESHOLD_KEYS if k in thresholds},
                                       **{f"{k}_enabled": bool(v) for k, v in enabled.items()}})
    return [RuleSpec(r.name, r.column, r.op, float(r.threshold), r.reason, bool(r.enabled)) for r in all_rules(cfg)]


def _iteration(root: Path, k: int, stats: dict[str, Any]) -> IterationData:
    from pipelines.filters.table import read_candidates

    table_dir = stats.get("candidates_table")
    if table_dir and not Path(table_dir).exists():
        raise ReviewError(f"{table_dir}: the candidates table of filter_{k} is missing")
    table = read_candidates(table_dir) if table_dir else {}
    separator = _outputs(root, f"separator_{k}") or {}
    return IterationData(iteration=k, table=table, stats=stats, rules=rules_of(stats.get("thresholds") or {}),
                         thresholds=stats.get("thresholds") or {},
                         separator={"checkpoint": separator.get("checkpoint"), "checkpoint_hash": separator.get("checkpoint_hash")},
                         filter_root=Path(stats.get("kept_audio") or root / f"iter{k}" / "filter" / "kept_audio").parent)


def load_run(run_dir: str | Path) -> RunData:
    """Read what the review page needs from `run_dir`; every finished filter step becomes an iteration."""
    from engine.run_config import load as load_config
    from storage.configio import ConfigError

    root = Path(run_dir).resolve()
    if not root.is_dir():
        raise ReviewError(f"{root}: not a run directory")
    if not (root / "run.json").is_file():
        raise ReviewError(f"{root}: not a stemforge run directory (no run.json)")
    stamp = _json(root / "run.json")
    resolved = root / "config.resolved.yaml"
    if not resolved.is_file():
        raise ReviewError(f"{resolved}: missing (is {root} a stemforge run directory?)")
    try:
        cfg = load_config(resolved)
    except ConfigError as exc:
        raise ReviewError(f"{resolved}: {exc}") from exc
    steps = sorted((root / "steps").glob("filter_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    if not steps:
        raise ReviewError(f"{root / 'steps'}: no finished filter step (filter_K.json): nothing to review yet")
    iterations = [_iteration(root, int(p.stem.split("_")[1]), _json(p).get("outputs") or {}) for p in steps]
    report_path = root / "report.json"
    report = _json(report_path) if report_path.is_file() else None
    scorers = {s: {"checkpoint": o.get("checkpoint"), "checkpoint_hash": o.get("checkpoint_hash")}
               for s in ("clap", "judge", "pc") if (o := _outputs(root, f"scorer_{s}"))}
    split_of: dict[str, str] = {}
    corpus = _outputs(root, "corpus")
    if corpus and corpus.get("scenes") and Path(corpus["scenes"]).exists():
        from storage.manifests import iter_rows

        split_of = {r["clip_id"]: r["split"] for r in iter_rows(corpus["scenes"], expect="natural_scene")}
    return RunData(root=root, name=root.name, config_hash=str(stamp.get("config_hash", "")), cfg=cfg, report=report,
                   iterations=iterations, scorers=scorers, split_of=split_of,
                   training_splits=tuple(cfg.engine.pseudo_label_splits))
