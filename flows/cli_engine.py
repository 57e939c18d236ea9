"""`stemforge pseudolabel | filter | tiers` and `stemforge train final`: the engine's steps one at a time, for users
who drive them from their own orchestration.

Same code as the flows: each command opens a work directory (`--out`, a run directory with done-markers, so a
re-run resumes and is idempotent) and calls the step function the flows call (engine/steps.py), under the same
executor (`engine.backend`: Ray by default). Inputs come from options or from a finished run (`--from-run`: its
corpus, scorers and last separator), and are recorded in `<out>/commands/<step>.json`, so `tiers` continues the
`filter` of the same directory without repeating them.

- `pseudolabel`: separator candidates for every scene with every score, nothing dropped (all filter gates off);
  their target audio lands in `iter<K>/filter/kept_audio/`, the table in `iter<K>/filter/table/`.
- `filter`: the same candidates with the configured filters: the candidates table with each score, decision and
  reason (`iter<K>/filter/table/`, `filter_stats.json`).
- `tiers`: the kept candidates of that `filter` into ITT / SST shard stores (`iter<K>/tiers/{itt,sst}/`).
- `train final`: the `train_final` flow on a run whose cycle has finished (release in `<run>/final/`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from flows.common import EXIT_DATA, EXIT_USAGE, config_options, fail

SCORERS = ("clap", "judge", "pc")


def _ckpt(path: str) -> dict[str, Any]:
    from models.weights import weights_hash

    p = Path(path).absolute()
    return {"checkpoint": str(p), "checkpoint_hash": weights_hash(p)[:16]}


def corpus_folder(folder: str) -> dict[str, Any]:
    """An imported corpus folder (or a run's `corpus/`) as the corpus result the steps take."""
    root = Path(folder).absolute()
    man = root / "manifests"
    if not (man / "scenes").is_dir():
        fail(f"{man / 'scenes'}: not found: a corpus folder is one written by `stemforge corpus import` or "
             f"`stemforge corpus demo` with natural scenes", EXIT_DATA)
    audit = man / "audit"
    return {"dir": str(root), "sources": str(man / "sources"), "scenes": str(man / "scenes"),
            "audit": str(audit) if audit.is_dir() else None}


def _from_run(run_dir: str) -> dict[str, Any]:
    """corpus, scorers and the last separator of a finished (or partly finished) run directory."""
    from engine.workspace import Workspace

    root = Path(run_dir).absolute()
    if not (root / "run.json").is_file():
        fail(f"{root / 'run.json'}: not found: --from-run needs a run directory (runs/<name>)", EXIT_USAGE)
    ws = Workspace(root=root, config_hash="")  # read-only use: markers
    out: dict[str, Any] = {}
    corpus = ws.done("corpus")
    if corpus is not None:
        out["corpus"] = corpus["outputs"]
    for which in SCORERS:
        done = ws.done(f"scorer_{which}")
        if done is not None:
            out.setdefault("scorers", {})[which] = {k: done["outputs"][k] for k in ("checkpoint", "checkpoint_hash")}
    k = 0
    while ws.done(f"separator_{k + 1}") is not None:
        k += 1
    sep = ws.done(f"separator_{k}")
    if sep is not None:
        out["separator"] = {kk: sep["outputs"][kk] for kk in ("checkpoint", "checkpoint_hash")}
    return out


def _inputs(from_run: str | None, corpus: str | None, separator: str | None, scorer_paths: dict[str, str | None]) -> dict[str, Any]:
    got = _from_run(from_run) if from_run else {}
    if corpus:
        got["corpus"] = corpus_folder(corpus)
    if separator:
        got["separator"] = _ckpt(separator)
    for which, path in scorer_paths.items():
        if path:
            got.setdefault("scorers", {})[which] = _ckpt(path)
    missing = [n for n in ("corpus", "separator") if n not in got]
    missing += [f"--{w}" for w in SCORERS if w not in got.get("scorers", {})]
    if missing:
        fail(f"missing input(s) {missing}: give them as options or take them from a run with --from-run", EXIT_USAGE)
    return got


def _open(cfg: Any, out: str) -> Any:
    from engine.steps import open_run

    p = Path(out).absolute()
    return open_run(cfg, p.parent, p.name)


def _record(ctx: Any, step: str, inputs: dict[str, Any]) -> None:
    from storage.atomic import atomic_write_text

    path = ctx.root / "commands" / f"{step}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(inputs, indent=2) + "\n")


def _inputs_options(func: Any) -> Any:
    for opt in reversed([
        click.option("--from-run", "from_run", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Take corpus, scorers and the last separator from this run directory (options override)."),
        click.option("--corpus", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Corpus folder with manifests/scenes (`corpus import` / `corpus demo` output)."),
        click.option("--separator", type=click.Path(exists=True, dir_okay=False), default=None, help="Separator checkpoint."),
        click.option("--clap", type=click.Path(exists=True, dir_okay=False), default=None, help="CLAP scorer checkpoint."),
        click.option("--judge", type=click.Path(exists=True, dir_okay=False), default=None, help="Judge checkpoint."),
        click.option("--pc", type=click.Path(exists=True, dir_okay=False), default=None, help="PC scorer checkpoint."),
        click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                     help="Work directory (created; a re-run resumes)."),
        click.option("--iteration", "k", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Iteration number of the outputs (iter<K>/)."),
        click.option("--split", "splits", multiple=True, default=None,
                     help="Scene split(s) to pseudo-label (default: engine.pseudo_label_splits)."),
    ]):
        func = opt(func)
    return func


def _run_filter(cfg: Any, step_name: str, from_run: str | None, corpus: str | None, separator: str | None,
                clap: str | None, judge: str | None, pc: str | None, out: str, k: int, splits: tuple[str, ...]) -> None:
    from engine import steps
    from engine.run_config import with_overrides
    from engine.workspace import RunError

    inputs = _inputs(from_run, corpus, separator, {"clap": clap, "judge": judge, "pc": pc})
    if splits:
        cfg = with_overrides(cfg, {"engine.pseudo_label_splits": list(splits)})
    if step_name == "pseudolabel":
        cfg = with_overrides(cfg, {f"filters.{f}_enabled": False for f in
                                   ("remix", "clap_target", "clap_residual", "pc", "silence", "judge")})
    try:
        ctx = _open(cfg, out)
        _record(ctx, f"filter_{k}", inputs)
        with steps.backend_session(cfg):
            stats = steps.pseudo_label_and_filter(ctx, k, inputs["corpus"], inputs["separator"], inputs["scorers"])
    except RunError as exc:
        fail(str(exc), EXIT_USAGE)
    keys = ("iteration", "scenes_labelled", "candidates", "kept_itt", "kept_sst", "re_sdr_mean_db", "rejections",
            "candidates_table", "kept_audio", "quarantined")
    click.echo(json.dumps({"step": step_name, **{key: stats.get(key) for key in keys}}))


@click.command("pseudolabel")
@_inputs_options
@config_options
def pseudolabel(cfg: Any, **kw: Any) -> None:
    """Pseudo-label natural scenes with a separator: every candidate track with all its scores, none dropped."""
    _run_filter(cfg, "pseudolabel", **kw)


@click.command("filter")
@_inputs_options
@config_options
def filter_(cfg: Any, **kw: Any) -> None:
    """Pseudo-label, score and filter natural scenes: the candidates table with every score, decision and reason."""
    _run_filter(cfg, "filter", **kw)


@click.command("tiers")
@click.option("--out", "out", required=True, type=click.Path(exists=True, file_okay=False),
              help="The work directory of a finished `stemforge filter`.")
@click.option("--iteration", "k", type=click.IntRange(min=0), default=0, show_default=True)
@config_options
def tiers(cfg: Any, out: str, k: int) -> None:
    """Write the kept candidates of `stemforge filter --out OUT` into ITT / SST WebDataset shard stores."""
    from engine import steps
    from engine.workspace import RunError

    recorded = Path(out).absolute() / "commands" / f"filter_{k}.json"
    if not recorded.is_file():
        fail(f"{recorded}: not found: run `stemforge filter --out {out} --iteration {k}` first", EXIT_USAGE)
    inputs = json.loads(recorded.read_text())
    try:
        ctx = _open(cfg, out)
        if ctx.ws.done(f"filter_{k}") is None:
            fail(f"{ctx.root}: filter_{k} has not finished: run `stemforge filter --out {out}` again", EXIT_USAGE)
        with steps.backend_session(cfg):
            result = steps.tier_shards(ctx, k, inputs["corpus"], inputs["separator"], inputs["scorers"])
    except RunError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(json.dumps({"step": "tiers", "iteration": k, **result}))


@click.command("final")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run directory whose relabel cycle has finished (runs/<name>).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Final separator budget (engine.final.steps).")
@click.option("--preset", type=click.Choice(["same", "tiny", "clapsep"]), default=None, help="engine.final.preset.")
@click.option("--judge-steps", type=click.IntRange(min=0), default=None, help="engine.final.judge_steps.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="DDP ranks of the final separator (engine.final.train_workers; backend ray).")
@click.option("--judge-ratings", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Human ratings table for the judge (engine.final.judge_ratings; default: proxy ratings).")
def train_final(run_dir: str, steps: int | None, preset: str | None, judge_steps: int | None,
                workers: int | None, judge_ratings: str | None) -> None:
    """Train the final separator and judge of a finished run and write its release folder `<run>/final/`.

    Runs the `train_final` flow with the run's own resolved config (`<run>/config.resolved.yaml`); the options change
    only the final stage (a changed final stage trains again; the cycle's results are kept)."""
    from engine.run_config import StemforgeConfig, with_overrides
    from engine.workspace import RunError
    from flows.common import setup_logging
    from flows.cycle import train_final as flow
    from storage.configio import ConfigError, load_config

    setup_logging()
    root = Path(run_dir).absolute()
    resolved = root / "config.resolved.yaml"
    if not resolved.is_file():
        fail(f"{resolved}: not found: --run needs a stemforge run directory", EXIT_USAGE)
    given = {"steps": steps, "preset": preset, "judge_steps": judge_steps, "train_workers": workers,
             "judge_ratings": str(Path(judge_ratings).absolute()) if judge_ratings else None}
    try:
        run_cfg = load_config(StemforgeConfig, resolved, ())
        run_cfg = with_overrides(run_cfg, {f"engine.final.{k}": v for k, v in given.items() if v is not None})
        out = flow(config=run_cfg.model_dump(mode="json"), out_root=str(root.parent), name=root.name)
    except (RunError, ConfigError) as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(json.dumps(out, default=str))
