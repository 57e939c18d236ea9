"""The stemforge flows: `build_dataset`, `relabel_cycle` (one sub-flow per iteration), `train_final` and
`stemforge_run`, which runs the three in one parent flow. The only orchestration of the engine: `stemforge run`, deployments and
`stemforge serve` all run these.

- `build_dataset`: corpus (demo or import; incremental and deduplicated by content hash inside the corpus step) ->
  synthetic shard stores per split. Safe to run again at any time: finished steps resume from their markers.
- `relabel_cycle`: the scorers train concurrently with the bootstrap separator (as Ray tasks on the cores the
  separator leaves free; one after another in-process), then per iteration k = 1, 2, ...: pseudo-label + score +
  filter with separator k-1 -> tier shards -> retrain separator k from k-1, and its compute-matched control (same
  init, same steps, synthetic only; `engine.control`), concurrently under Ray -> evaluate both (concurrently
  too) -> the stop rule (engine/convergence.py) on the validation scenes. It stops by itself and the report says
  why. With a final stage, the final judge trains beside the bootstrap too (it needs only the corpus and the judge).
- Artifacts per iteration: a Markdown summary, ClearSep Table 2 / Table 9 shaped tables, and at the end the
  report and links to its plots; a progress artifact counts the steps of the cycle as they finish.

Every flow takes the resolved config as JSON (`config`), so a deployment carries validated parameters and a
scheduled run computes exactly what was deployed. Prefect runs ephemerally (no server) unless PREFECT_API_URL
is set. `until` stops a flow after the named step (its marker written); a later run continues.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.artifacts import (create_link_artifact, create_markdown_artifact, create_progress_artifact,
                               create_table_artifact, update_progress_artifact)
from prefect.futures import PrefectFuture

from engine import steps
from engine.convergence import decide
from engine.model_steps import tier_dirs
from engine.report import table2_rows, table9_rows
from engine.run_config import StemforgeConfig
from flows import tasks

def artifact_key(kind: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{name}".lower()).strip("-")


def validated(config: dict[str, Any] | StemforgeConfig) -> StemforgeConfig:
    from storage.configio import validate

    return config if isinstance(config, StemforgeConfig) else validate(StemforgeConfig, config, "<flow parameters>")


@contextmanager
def _run_scope(config: dict[str, Any] | StemforgeConfig, out_root: str | None, name: str | None,
               restart: bool) -> Iterator[steps.RunContext]:
    """The run's context for a flow body. The outermost flow of this process opens (or with `restart` wipes) the
    run directory and registers it; its sub-flows reuse that context, so step timings and resumed steps add up in
    one report. When the outermost flow ends the context is dropped: the next invocation starts fresh."""
    cfg = validated(config)
    root = str((Path(out_root or cfg.run.out_root) / (name or cfg.run.name)).absolute())
    outer = tasks.lookup(root) is None
    ctx = steps.open_run(cfg, out_root, name, restart) if outer else tasks.lookup(root)
    if ctx.cfg != cfg:
        raise RuntimeError(f"{root}: a sub-flow was given another config than its parent flow")
    if outer:
        tasks.register(ctx)
    try:
        yield ctx
    finally:
        if outer:
            tasks.unregister(root)


class _Progress:
    """A progress artifact over the cycle's planned steps (updated as each finishes; Prefect shows it live)."""

    def __init__(self, name: str, total: int) -> None:
        self.total, self.done = max(1, total), 0
        self.id = create_progress_artifact(progress=0.0, key=artifact_key("progress", name),
                                           description=f"stemforge run {name}: steps finished")

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        update_progress_artifact(self.id, progress=100.0 * self.done / self.total)


# ---- build ---------------------------------------------------------------------------------------------------------

@flow(name="build-dataset", log_prints=False)
def build_dataset(config: dict[str, Any], out_root: str | None = None, name: str | None = None, restart: bool = False,
                  until: str | None = None) -> dict[str, Any]:
    """Corpus -> synthetic shard stores per split; returns both steps' results (or stops after `until`)."""
    with _run_scope(config, out_root, name, restart) as ctx:
        return _build(ctx, until)


def _build(ctx: steps.RunContext, until: str | None) -> dict[str, Any]:
    run = str(ctx.root)
    with steps.backend_session(ctx.cfg):
        corpus = tasks.corpus(run)
        if until == "corpus":
            return {"corpus": corpus, "stopped_after": "corpus"}
        synthetic = tasks.synthetic(run, corpus)
    summary = corpus.get("summary") or {}
    create_markdown_artifact(key=artifact_key("build", ctx.name), description="corpus and synthetic shards", markdown=(
        f"# Dataset build `{ctx.name}`\n\nRun directory `{ctx.root}`, config `{ctx.ws.config_hash}`.\n\n"
        f"## Corpus\n\n```\n{_kv(summary)}\n```\n\n## Synthetic tuples per split\n\n"
        + "".join(f"- {split}: {n} tuples (`{synthetic['dirs'][split]}`)\n" for split, n in synthetic["counts"].items())))
    out = {"corpus": corpus, "synthetic": synthetic}
    if until == "synthetic":
        out["stopped_after"] = "synthetic"
    return out


def _kv(d: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in d.items() if not isinstance(v, (dict, list))) or "(no summary)"


# ---- the relabel cycle ---------------------------------------------------------------------------------------------

def _bootstrap(ctx: steps.RunContext, corpus: dict[str, Any], synthetic: dict[str, Any],
               progress: _Progress) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Separator 0 and the three scorers, concurrently where Ray can place them: scorer tasks beyond the cores the
    separator leaves free wait for an earlier scorer (`wait_for`), so nothing oversubscribes the machine. With a
    final stage (`engine.final.enabled`) the final judge follows in the same chains: it needs only the corpus and
    the run's judge, and the scorers leave that core idle for most of the bootstrap (train_final resumes it)."""
    run, cfg = str(ctx.root), ctx.cfg
    clap = None
    if cfg.engine.separator_queries == "run_clap":  # the separators embed queries with the run's CLAP: it goes first
        clap = tasks.scorer(run, "clap", corpus, False, step="scorer_clap")
        progress.advance()
    remote = cfg.engine.backend == "ray" and cfg.engine.parallel_scorers
    pending = [w for w in steps.SCORERS if not (w == "clap" and clap is not None)]
    futures: dict[str, PrefectFuture] = {}
    results: dict[str, dict[str, Any]] = {} if clap is None else {"clap": clap}
    early_judge = None
    if remote:
        free = max(1, int(steps.ray_cpus() - cfg.engine.train_workers))
        for i, which in enumerate(pending):
            after = [futures[pending[i - free]]] if i >= free else []
            futures[which] = tasks.scorer.submit(run, which, corpus, True, step=f"scorer_{which}", wait_for=after)
        if cfg.engine.final.enabled:
            after = [futures[pending[len(pending) - free]]] if len(pending) >= free else []
            early_judge = tasks.final_judge.submit(run, corpus, futures["judge"], remote=True, wait_for=after)
    try:
        separator = tasks.bootstrap_separator(run, synthetic, clap)
    except BaseException:
        for fut in [*futures.values(), *([early_judge] if early_judge else [])]:  # markers are kept for the re-run
            fut.wait()
        raise
    progress.advance()
    for which in pending:
        results[which] = futures[which].result() if which in futures else tasks.scorer(run, which, corpus, False,
                                                                                         step=f"scorer_{which}")
        progress.advance()
    if early_judge is not None:
        early_judge.result()
    return separator, {w: results[w] for w in steps.SCORERS}


def _start_judge(run: str, k: int, corpus: dict[str, Any], synthetic: dict[str, Any], separator: dict[str, Any],
                 scorers: dict[str, dict[str, Any]]) -> PrefectFuture | None:
    """judge_k (the run's judge re-calibrated on separator k) submitted as soon as separator k exists, when the
    config asks for it and Ray runs the steps: it needs nothing else, so it runs while separator k (and its control)
    are evaluated, on a core Ray frees (the evaluations' ~10-25 s of each iteration's ~17-20-min calibration)."""
    ctx = tasks.context(run)
    if not ctx.cfg.engine.judge_calibration.enabled or ctx.cfg.engine.backend != "ray":
        return None
    return tasks.calibrated_judge.submit(run, k, corpus, synthetic, separator, scorers["judge"], step=f"judge_{k}",
                                         remote=True)


def _filter(run: str, k: int, corpus: dict[str, Any], synthetic: dict[str, Any], separator: dict[str, Any],
            scorers: dict[str, dict[str, Any]], judge: PrefectFuture | None = None) -> dict[str, Any]:
    """filter_k, after judge_k when the config asks for it (`judge`: the one `_start_judge` submitted)."""
    ctx = tasks.context(run)
    if judge is not None:
        judge.result()
    elif ctx.cfg.engine.judge_calibration.enabled:
        tasks.calibrated_judge(run, k, corpus, synthetic, separator, scorers["judge"], step=f"judge_{k}", remote=True)
    return tasks.pseudo_label_and_filter(run, k, corpus, separator, steps.filter_scorers(ctx, k, scorers),
                                         step=f"filter_{k}")


@flow(name="relabel-iteration", flow_run_name="{name}-iteration-{k}", log_prints=False)
def relabel_iteration(run: str, name: str, k: int, corpus: dict[str, Any], synthetic: dict[str, Any],
                      previous: dict[str, Any], previous_filter: dict[str, Any], scorers: dict[str, dict[str, Any]],
                      clap: dict[str, Any] | None, pseudo_label: bool) -> dict[str, Any]:
    """Iteration k: tiers of separator k-1's kept pseudo-labels -> separator k retrained from k-1 (and its
    compute-matched control, concurrently under Ray) -> evaluate both -> separator k pseudo-labels the training
    scenes (`pseudo_label`: the next iteration's data and its label-free Re-SDR)."""
    ctx = tasks.context(run)
    cfg = ctx.cfg
    tiers = tasks.tier_shards(run, k - 1, corpus, previous, steps.filter_scorers(ctx, k - 1, scorers),
                              step=f"tiers_{k - 1}")
    concurrent = cfg.engine.backend == "ray" and steps.ray_cpus() >= 2 * cfg.engine.train_workers
    ctl_future = None
    if cfg.engine.control and concurrent:
        ctl_future = tasks.control.submit(run, k, synthetic, previous, clap, step=f"control_{k}")
    separator = tasks.retrain(run, k, synthetic, corpus, previous, tiers, clap, step=f"separator_{k}")
    judge = _start_judge(run, k, corpus, synthetic, separator, scorers) if pseudo_label else None
    ctl = None
    if cfg.engine.control:
        ctl = ctl_future.result() if ctl_future is not None else tasks.control(run, k, synthetic, previous, clap,
                                                                                step=f"control_{k}")
    cev_future = None
    if ctl is not None and concurrent:  # the control's evaluation on the other core, as a Ray task
        cev_future = tasks.evaluate.submit(run, f"control_{k}", ctl, corpus, synthetic, scorers,
                                           step=f"evaluate_control_{k}", remote=True)
    ev = tasks.evaluate(run, str(k), separator, corpus, synthetic, scorers, step=f"evaluate_{k}")
    cev = None if ctl is None else cev_future.result() if cev_future is not None else tasks.evaluate(
        run, f"control_{k}", ctl, corpus, synthetic, scorers, step=f"evaluate_control_{k}")
    filt = _filter(run, k, corpus, synthetic, separator, scorers, judge) if pseudo_label else None
    gain = None if cev is None else steps.engine_vs_control(cfg, ev, cev)
    create_markdown_artifact(key=artifact_key(f"iteration-{k}", name), description=f"relabel iteration {k}", markdown=(
        f"# Iteration {k} of `{name}`\n\n"
        f"- trained on the pseudo-labels of separator {k - 1}: {previous_filter['candidates']} candidates from "
        f"{previous_filter['scenes_labelled']} scenes; kept {previous_filter['kept_itt']} ITT / "
        f"{previous_filter['kept_sst']} SST tracks (tiers: {tiers.get('itt', {}).get('count')} / "
        f"{tiers.get('sst', {}).get('count')})\n"
        f"- separator {k} (data weights {separator.get('weights')}): natural SDRi {ev.get('natural_sdri_db')} dB "
        f"(test), {(ev.get('val') or {}).get('natural_sdri_db')} dB (validation); synthetic SDRi {ev.get('sdri_db')} dB\n"
        + (f"- control {k} (synthetic only, same init and steps): natural SDRi {cev.get('natural_sdri_db')} dB; "
           f"engine over control on the test scenes: {gain}\n" if cev else "")
        + (f"- separator {k}'s own pseudo-labels: scenes with Re-SDR > 15 dB: {_pct(filt.get('prop_re_sdr_gt15'))}\n"
           if filt else "")))
    return {"k": k, "filter": filt, "tiers": tiers, "separator": separator, "control": ctl, "evaluation": ev,
            "control_evaluation": cev}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


@flow(name="relabel-cycle", log_prints=False)
def relabel_cycle(config: dict[str, Any], out_root: str | None = None, name: str | None = None, restart: bool = False,
                  until: str | None = None) -> dict[str, Any]:
    """Bootstrap, then iterate until the stop rule says so; writes the report and returns it."""
    with _run_scope(config, out_root, name, restart) as ctx:
        return _cycle(ctx, out_root, name, until)


def _cycle(ctx: steps.RunContext, out_root: str | None, name: str | None, until: str | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    run, cfg = str(ctx.root), ctx.cfg
    logger = get_run_logger()
    per_iteration = 5 + 2 * int(cfg.engine.control)
    progress = _Progress(ctx.name, 2 + 5 + cfg.run.max_iterations * per_iteration + 1)
    with steps.backend_session(cfg) as session:
        if ctx.ws.done("synthetic") is None:  # on its own (not under stemforge_run): build the dataset first
            build = build_dataset(config=cfg.model_dump(mode="json"), out_root=out_root, name=name, until=until)
            if "stopped_after" in build:
                return {"name": ctx.name, "stopped_after": build["stopped_after"], "timings": dict(ctx.ws.timings)}
        corpus, synthetic = steps.finished(ctx, "corpus"), steps.finished(ctx, "synthetic")  # the build's results
        progress.advance(2)
        separator0, scorers = _bootstrap(ctx, corpus, synthetic, progress)
        if until in {"separator_0", *(f"scorer_{w}" for w in steps.SCORERS)}:
            return {"name": ctx.name, "stopped_after": until, "timings": dict(ctx.ws.timings)}
        clap = scorers["clap"] if cfg.engine.separator_queries == "run_clap" else None
        judge0 = _start_judge(run, 0, corpus, synthetic, separator0, scorers)
        evals = [tasks.evaluate(run, "0", separator0, corpus, synthetic, scorers, step="evaluate_0")]
        filters = {0: _filter(run, 0, corpus, synthetic, separator0, scorers, judge0)}
        progress.advance(2)
        if until in ("evaluate_0", "filter_0"):
            return {"name": ctx.name, "stopped_after": until, "timings": dict(ctx.ws.timings)}
        results: dict[str, Any] = {"corpus": corpus, "synthetic": synthetic, "scorers": scorers,
                                   "separators": [separator0], "evals": evals, "filters": filters, "controls": {},
                                   "control_evals": {}, "decisions": []}
        values = [steps.stop_value(cfg, evals[0], filters[0])]
        metric = steps.stop_metric_name(cfg, evals[0])
        # the stop rule's Re-SDR comes from the pseudo-labels unless the (label-free) evaluation scored the val scenes
        needs_filter = metric.startswith("re_sdr") and (evals[0].get("val") or {}).get("re_sdr_mean_db") is None
        k = 0
        while True:
            k += 1
            last_possible = k >= cfg.run.max_iterations
            pseudo_label = needs_filter or cfg.engine.final_pseudo_label or not last_possible
            it = relabel_iteration(run, ctx.name, k, corpus, synthetic, results["separators"][-1], filters[k - 1],
                                   scorers, clap, pseudo_label)
            progress.advance(per_iteration)
            results["separators"].append(it["separator"])
            results["evals"].append(it["evaluation"])
            if it["filter"] is not None:
                filters[k] = it["filter"]
            if it["control"] is not None:
                results["controls"][k] = it["control"]
                results["control_evals"][k] = it["control_evaluation"]
            values.append(steps.stop_value(cfg, it["evaluation"], it["filter"]))
            decision = decide(values, min_gain_db=cfg.run.min_gain_db, min_iterations=cfg.run.min_iterations,
                              max_iterations=cfg.run.max_iterations, metric=metric)
            results["decisions"].append(decision.to_dict())
            logger.info("stop rule: %s", decision.reason)
            _tables(ctx.name, results)
            if decision.stop:
                break
            if until == f"separator_{k}":
                return {"name": ctx.name, "stopped_after": until, "timings": dict(ctx.ws.timings)}
            if it["filter"] is None:  # cannot happen: pseudo_label is true whenever another iteration may follow
                raise RuntimeError(f"iteration {k} continues without separator {k}'s pseudo-labels")
        results["stop"] = results["decisions"][-1]
        report = steps.report(ctx, results, time.perf_counter() - t0, session)
        progress.advance(progress.total)
    review = steps.review_page(ctx)
    if review:
        report["files"]["review"] = review
    _final_artifacts(ctx, report)
    return report


def _tables(name: str, results: dict[str, Any]) -> None:
    """Table artifacts after every iteration (a new version of the same keys each time)."""
    rows = []
    for k, (sep, ev) in enumerate(zip(results["separators"], results["evals"])):
        cev = results["control_evals"].get(k) or {}
        f = results["filters"].get(k) or {}
        rows.append({"iteration": k, "sdri_db": ev.get("sdri_db"), "si_sdri_db": ev.get("si_sdri_db"),
                     "natural_sdri_db": ev.get("natural_sdri_db"), "natural_sdri_ci95_db": ev.get("natural_sdri_ci95_db"),
                     "control_natural_sdri_db": cev.get("natural_sdri_db"),
                     "val_natural_sdri_db": (ev.get("val") or {}).get("natural_sdri_db"),
                     **{kk: f.get(kk) for kk in steps.FILTER_KEYS}})
    report_like = {"iterations": rows}
    create_table_artifact(key=artifact_key("sdri", name), table=table2_rows(report_like),
                          description="SDRi per iteration (ClearSep Table 2's shape)")
    t9 = table9_rows(report_like)
    if t9:
        create_table_artifact(key=artifact_key("data", name), table=t9,
                              description="source clips/hours and tracks/hours kept at 10 and 15 dB (ClearSep Table 9's shape)")


def _final_artifacts(ctx: steps.RunContext, report: dict[str, Any]) -> None:
    md = Path(report["files"]["md"]).read_text()
    create_markdown_artifact(key=artifact_key("report", ctx.name), markdown=md, description="stemforge run report")
    create_table_artifact(key=artifact_key("sdri", ctx.name), table=table2_rows(report),
                          description="SDRi per iteration (ClearSep Table 2's shape)")
    t9 = table9_rows(report)
    if t9:
        create_table_artifact(key=artifact_key("data", ctx.name), table=t9,
                              description="source clips/hours and tracks/hours kept at 10 and 15 dB (ClearSep Table 9's shape)")
    if report["files"].get("review"):
        create_link_artifact(key=artifact_key("review", ctx.name), link=Path(report["files"]["review"]).as_uri(),
                             link_text=f"review page of {ctx.name} (open from disk)",
                             description="listen to what each filter kept and dropped; move thresholds")
    for plot, path in report.get("plots", {}).items():
        create_link_artifact(key=artifact_key(f"plot-{plot}", ctx.name), link=Path(path).absolute().as_uri(),
                             link_text=f"{plot} plot ({Path(path).name})", description=f"report plot: {plot}")


# ---- the final separator and judge ---------------------------------------------------------------------------------

@flow(name="train-final", log_prints=False)
def train_final(config: dict[str, Any], out_root: str | None = None, name: str | None = None, restart: bool = False,
                until: str | None = None) -> dict[str, Any]:
    """After the cycle stopped: the final separator (from the cycle's best separator on the validation scenes, on
    synthetic + the kept tiers of its pseudo-labels, `engine.final.train_workers` DDP ranks) and the final judge
    (usually trained already, beside the bootstrap; else beside the separator where a core is left over, or
    first), evaluated by the run's evaluator, released to `<run>/final/`."""
    with _run_scope(config, out_root, name, restart) as ctx:
        return _final(ctx)


def _final(ctx: steps.RunContext) -> dict[str, Any]:
    import json

    from engine.workspace import RunError

    run, cfg = str(ctx.root), ctx.cfg
    report_path = ctx.root / "report.json"
    if not report_path.is_file():
        raise RunError(f"{report_path}: not found: the relabel cycle has not finished in this run (run `stemforge run` "
                       f"or the relabel-cycle flow first)")
    report = json.loads(report_path.read_text())
    k = steps.best_iteration(report)  # the cycle's best separator on the validation scenes
    with steps.backend_session(cfg):
        corpus, synthetic = steps.finished(ctx, "corpus"), steps.finished(ctx, "synthetic")
        scorers = {w: steps.finished(ctx, f"scorer_{w}") for w in steps.SCORERS}
        last = steps.finished(ctx, f"separator_{k}")
        clap = scorers["clap"] if cfg.engine.separator_queries == "run_clap" else None
        if ctx.ws.done(f"filter_{k}") is not None:  # separator k pseudo-labelled: its kept tracks are the data
            j = k
            tiers = tasks.tier_shards(run, k, corpus, last, steps.filter_scorers(ctx, k, scorers), step=f"tiers_{k}")
        elif k > 0:
            j = k - 1
            tiers = steps.finished(ctx, f"tiers_{k - 1}")
        else:
            raise RunError(f"{ctx.root}: separator 0 is the best but filter_0 has not finished")
        tiers = steps.training_tiers(ctx, j, tiers)
        accumulated = any(len(tier_dirs(v)) > 1 for v in tiers.values())
        tiers_from = f"filter_{j} (separator {j})" + (" and earlier iterations' (engine.accumulate_tiers)"
                                                      if accumulated else "")
        # the judge usually finished during the bootstrap (_bootstrap); else beside the separator where a core is
        # left over, or first, so that the separator's ranks have every core to themselves
        judge, judge_future = None, None
        if not steps.final_judge_current(ctx, scorers["judge"]):
            if cfg.engine.backend == "ray" and steps.ray_cpus() >= steps.final_train_workers(cfg) + 1:
                judge_future = tasks.final_judge.submit(run, corpus, scorers["judge"])
            else:
                judge = tasks.final_judge(run, corpus, scorers["judge"])
        separator = tasks.final_separator(run, synthetic, corpus, last, tiers, clap)
        if judge is None:
            judge = judge_future.result() if judge_future is not None else tasks.final_judge(run, corpus,
                                                                                             scorers["judge"])
        ev = tasks.evaluate(run, "final", separator, corpus, synthetic, scorers, step="evaluate_final")
        rel = tasks.release(run, report, separator, judge, ev, steps.finished(ctx, f"evaluate_{k}"), tiers, synthetic,
                            tiers_from)
    create_markdown_artifact(key=artifact_key("final", ctx.name), description="final separator and judge",
                             markdown=Path(rel["files"]["model_card.md"]).read_text())
    create_link_artifact(key=artifact_key("release", ctx.name), link=Path(rel["dir"]).absolute().as_uri(),
                         link_text=f"release folder of {ctx.name}", description="checkpoints, model card, evaluation")
    return {**rel, "evaluation": {k2: ev.get(k2) for k2 in ("sdri_db", "natural_sdri_db", "natural_sdri_ci95_db")},
            "judge_targets": judge["targets"]}


# ---- everything ------------------------------------------------------------------------------------------------------

@flow(name="stemforge-run", log_prints=False)
def stemforge_run(config: dict[str, Any], out_root: str | None = None, name: str | None = None, restart: bool = False,
                  until: str | None = None) -> dict[str, Any]:
    """`stemforge run`: build_dataset then relabel_cycle, in one parent flow and one Ray session."""
    with _run_scope(config, out_root, name, restart) as ctx, steps.backend_session(ctx.cfg) as session:
        params = {"config": ctx.cfg.model_dump(mode="json"), "out_root": out_root, "name": name, "until": until}
        build = build_dataset(**params)
        out = build if "stopped_after" in build else relabel_cycle(**params)
        if "stopped_after" not in out and ctx.cfg.engine.final.enabled:
            out = {**out, "final": train_final(**params)}
        return {**out, "resumed_steps": list(ctx.ws.resumed_steps), "timings": dict(ctx.ws.timings),
                "ray": session.to_dict() if session is not None else None}


FLOWS = {"build": build_dataset, "cycle": relabel_cycle, "final": train_final, "run": stemforge_run}
