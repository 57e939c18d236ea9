"""The engine's steps as the flows call them (flows/cycle.py): each takes the run and what it needs, and returns a
small JSON-able result.

Why one module of thin wrappers: orchestration lives in the flows (one path), the work in the step modules
(data_steps, model_steps, engine_steps, evaluation). Each function here runs its step under the run directory's
done-marker (engine/workspace.py: the markers are the truth, so a run resumes with or without Prefect's database),
after the fault-injection hook (engine/faults.py), and declares which config sections it reads (`STEP_SECTIONS`):
the flows' cache keys are built from those, the step's inputs and the code version (`step_key`), so changing
`engine.device` does not invalidate the corpus.

Step names (markers): corpus, synthetic, scorer_{clap,judge,pc}, separator_0, judge_K (optional: the judge
re-calibrated on separator K), filter_K, tiers_K, separator_K
(retrain from K-1 on synthetic + tiers of K-1), control_K (same init and steps, synthetic only), evaluate_K /
evaluate_control_K (test split: report only; validation split: the stop rule); after the cycle (train_final):
final_separator, final_judge, evaluate_final, release (engine/final.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.determinism import seed_step
from engine.faults import maybe_fail
from engine.run_config import StemforgeConfig, work_hash
from engine.workspace import RunError, Workspace

log = logging.getLogger("stemforge.run")

# step name pattern -> config keys the step reads ("section" or "section.key")
STEP_SECTIONS: list[tuple[str, tuple[str, ...]]] = [
    (r"corpus", ("run.seed", "audio", "corpus")),
    (r"synthetic", ("run.seed", "audio", "mixing", "shards", "engine.synthetic_counts")),
    (r"scorer_clap", ("run.seed", "audio", "clap", "engine.scorer_steps")),
    (r"scorer_judge", ("run.seed", "audio", "judge", "engine.scorer_steps")),
    (r"scorer_pc", ("run.seed", "audio", "pc", "engine.scorer_steps")),
    (r"separator_0", ("run.seed", "separator", "engine.separator_steps", "engine.train_workers",
                      "engine.separator_queries")),
    (r"(separator|control)_\d+", ("run.seed", "audio", "separator", "engine.retrain_steps", "engine.retrain_lr_scale",
                                  "engine.retrain_warmup_steps",
                                  "engine.train_workers",
                                  "engine.retrain_ratios", "engine.itt_max_others", "engine.accumulate_tiers",
                                  "engine.retrain_checkpoint", "engine.separator_queries")),
    (r"filter_\d+", ("audio", "pseudo_label", "filters", "engine.rows_per_batch", "engine.pseudo_label_splits",
                     "run.stop_metric", "run.stop_split")),
    (r"tiers_\d+", ("audio", "shards", "filters", "engine.pseudo_label_splits")),
    (r"judge_\d+", ("run.seed", "run.stop_split", "audio", "judge", "engine.judge_calibration")),
    # pseudo_label/filters/audio: the label-free natural evaluation (no stems) runs the pseudo-label + scoring chain
    (r"final_separator", ("run.seed", "audio", "separator", "engine.final", "engine.train_workers",
                          "engine.retrain_warmup_steps",
                          "engine.retrain_checkpoint", "engine.accumulate_tiers",
                          "engine.retrain_ratios", "engine.itt_max_others", "engine.separator_queries")),
    (r"final_judge", ("run.seed", "audio", "judge", "engine.final", "engine.scorer_steps")),
    (r"release", ("engine.final",)),
    (r"evaluate(_control)?_(\d+|final)", ("run.seed", "audio", "engine.eval_max_items", "engine.natural_eval_split",
                                   "run.stop_split", "pseudo_label", "filters")),
]


def sections_of(step: str) -> tuple[str, ...]:
    for pattern, keys in STEP_SECTIONS:
        if re.fullmatch(pattern, step):
            return keys
    raise KeyError(f"step {step!r} declares no config sections (engine/steps.py STEP_SECTIONS)")


def _pick(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


def step_key(cfg: StemforgeConfig, step: str, run_id: str, inputs: Any, code: str) -> str:
    """Cache key of one step: its own config sections, its inputs (upstream results, which carry checkpoint and
    data hashes), the code version and the run directory's id (a `--restart` starts a new directory, new keys)."""
    data = cfg.model_dump(mode="json")
    payload = {"step": step, "run_id": run_id, "code": code, "inputs": inputs,
               "config": {k: _pick(data, k) for k in sections_of(step)}}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"{step}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


@dataclass
class RunContext:
    """A run: its frozen config, its absolute directory and its markers."""

    cfg: StemforgeConfig
    root: Path
    ws: Workspace

    @property
    def name(self) -> str:
        return self.root.name

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run `fn` under `name`'s marker (resumed when done), after the fault-injection hook."""
        if self.ws.done(name) is None:
            maybe_fail(name, self.root)
            seed_step(self.cfg.run.seed, name, self.cfg.separator.threads)  # same state in any process
        return self.ws.step(name, fn)


def open_run(cfg: StemforgeConfig, out_root: str | Path | None = None, name: str | None = None,
             restart: bool = False) -> RunContext:
    """Open (or create, or with `restart` wipe and create) `<out_root>/<name>/` and record the resolved config."""
    from storage.configio import write_resolved

    name = name or cfg.run.name
    # absolute: Ray workers (Ray Train ranks, tasks on other nodes) do not share the driver's working directory
    root = (Path(out_root or cfg.run.out_root) / name).absolute()
    ws = Workspace.open(root, work_hash(cfg), restart=restart, allow_config_change=cfg.engine.allow_config_change)
    write_resolved(cfg, root)
    return RunContext(cfg, root, ws)


def as_ray_task(ctx: RunContext, step: str, fn: str, *args: Any,
                fresh_process: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run step `step` - this module's `fn(ctx, *args)` - as a Ray task in its own process (engine/step_tasks.py),
    which writes the step's marker; returns the step's outputs and where it ran."""
    from engine.step_tasks import StepTask

    maybe_fail(step, ctx.root)
    where = StepTask(ctx, step, fn, *args, fresh_process=fresh_process).wait()
    if not where["resumed"]:
        ctx.ws.ran_steps.append(step)
    return finished(ctx, step), where


def finished(ctx: RunContext, step: str) -> dict[str, Any]:
    """The outputs of a step that has finished in this run directory (read from its marker)."""
    done = ctx.ws.done(step)
    if done is None:
        raise RunError(f"{ctx.root}: step {step} has not finished")
    return done["outputs"]


# ---- build: corpus and synthetic shards --------------------------------------------------------------------------

def corpus(ctx: RunContext) -> dict[str, Any]:
    from engine.data_steps import step_corpus

    return ctx.step("corpus", lambda: step_corpus(ctx.ws, ctx.cfg))


def synthetic(ctx: RunContext, corpus_out: dict[str, Any]) -> dict[str, Any]:
    from engine.data_steps import step_synthetic

    out = ctx.step("synthetic", lambda: step_synthetic(ctx.ws, ctx.cfg, corpus_out["sources"]))
    missing = [s for s in ("train", "val", "test") if s not in out["dirs"]]
    if missing:
        raise RunError(f"{ctx.root}: engine.synthetic_counts must render train, val and test splits (missing {missing})")
    return out


# ---- bootstrap: scorers and separator 0 --------------------------------------------------------------------------

SCORERS = ("clap", "judge", "pc")


def scorer(ctx: RunContext, which: str, corpus_out: dict[str, Any], remote: bool = False) -> dict[str, Any]:
    """Train one mini scorer; `remote` runs it as a Ray task (its own process, one CPU) that writes the same marker,
    so a flow can train the scorers beside separator 0 on the cores the separator leaves free."""
    from engine import model_steps

    step = f"scorer_{which}"
    fn = {"clap": model_steps.train_clap_step, "judge": model_steps.train_judge_step, "pc": model_steps.train_pc_step}[which]
    if remote and ctx.cfg.engine.backend == "ray" and ctx.ws.done(step) is None:
        out, where = as_ray_task(ctx, step, "scorer", which, corpus_out)
        return {**out, "ran_in": where}
    return ctx.step(step, lambda: fn(ctx.ws, ctx.cfg, corpus_out["sources"]))


def separator_config(ctx: RunContext, clap: dict[str, Any] | None) -> StemforgeConfig:
    """The config the separators train with: `engine.separator_queries: run_clap` embeds their queries with the
    run's CLAP text tower. Only the separator trainers get it; every other step (and every lineage hash) sees the
    run's own config."""
    if ctx.cfg.engine.separator_queries != "run_clap":
        return ctx.cfg
    if clap is None:
        raise RunError(f"{ctx.root}: engine.separator_queries=run_clap needs scorer_clap before the separator")
    return ctx.cfg.model_copy(update={"separator": ctx.cfg.separator.model_copy(
        update={"text_encoder": f"clap:{clap['checkpoint']}"})})


def bootstrap_separator(ctx: RunContext, synthetic_out: dict[str, Any], clap: dict[str, Any] | None = None) -> dict[str, Any]:
    from engine.model_steps import train_separator_step
    from engine.ray_train import shard_streams

    cfg = separator_config(ctx, clap)
    return ctx.step("separator_0", lambda: train_separator_step(
        ctx.ws, cfg, "iter0", partial(shard_streams, [synthetic_out["dirs"]["train"]], cfg.separator.sample_rate),
        synthetic_out["dirs"]["val"], cfg.engine.separator_steps, lineage={"iteration": 0, "data": "synthetic"}))


# ---- one relabel iteration ---------------------------------------------------------------------------------------

def pseudo_label_and_filter(ctx: RunContext, k: int, corpus_out: dict[str, Any], separator: dict[str, Any],
                            scorers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """filter_k: separator k pseudo-labels the training scenes; every candidate scored and decided."""
    from engine.engine_steps import step_filter

    return ctx.step(f"filter_{k}", lambda: step_filter(ctx.ws, ctx.cfg, k, corpus_out, separator, scorers))


def calibrated_judge(ctx: RunContext, k: int, corpus_out: dict[str, Any], synthetic_out: dict[str, Any],
                     separator: dict[str, Any], judge: dict[str, Any], remote: bool = False) -> dict[str, Any]:
    """judge_k: the run's judge (`judge`) re-calibrated on separator k's outputs (engine/judge_calibration.py).
    `remote` (backend ray) runs it as a Ray task in a process of its own that exits afterwards: the rated examples
    take ~2.8 MB per 4-s tuple (~5 GB for the demo's 1669 items), which a long-lived driver would keep."""
    from engine.judge_calibration import step_calibrate_judge

    step = f"judge_{k}"
    if remote and ctx.cfg.engine.backend == "ray" and ctx.ws.done(step) is None:
        return as_ray_task(ctx, step, "calibrated_judge", k, corpus_out, synthetic_out, separator, judge,
                           fresh_process=True)[0]
    return ctx.step(step, lambda: step_calibrate_judge(ctx.ws, ctx.cfg, k, natural_eval_set(corpus_out),
                                                       synthetic_out["dirs"], separator, judge))


def filter_scorers(ctx: RunContext, k: int, scorers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The scorers filter_k and tiers_k use: the run's, with judge_k in the judge's place when
    `engine.judge_calibration.enabled` (judge_k must have finished)."""
    if not ctx.cfg.engine.judge_calibration.enabled:
        return scorers
    return {**scorers, "judge": finished(ctx, f"judge_{k}")}


def tier_shards(ctx: RunContext, k: int, corpus_out: dict[str, Any], separator: dict[str, Any],
                scorers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from engine.engine_steps import step_tiers

    return ctx.step(f"tiers_{k}", lambda: step_tiers(ctx.ws, ctx.cfg, k, corpus_out, separator, scorers))


def training_tiers(ctx: RunContext, k: int, tiers: dict[str, Any]) -> dict[str, Any]:
    """The tiers a model trained after iteration k's pseudo-labels learns from: `tiers` (iteration k's stores), and
    with `engine.accumulate_tiers` also those of every earlier iteration, newest first (`dirs`; the reader keeps a
    track's newest version). Counts are summed before that de-duplication (they only decide which tiers exist)."""
    from engine.model_steps import tier_dirs

    if not ctx.cfg.engine.accumulate_tiers or k == 0:
        return tiers
    earlier = [finished(ctx, f"tiers_{j}") for j in range(k - 1, -1, -1)]
    out: dict[str, Any] = {}
    for tier, cur in tiers.items():
        stores = [s for s in [cur] + [e.get(tier, {}) for e in earlier] if s.get("count", 0) > 0]
        out[tier] = cur if not stores else {
            **cur, "dirs": [tier_dirs(s)[0] for s in stores], "count": sum(int(s["count"]) for s in stores),
            "hours": sum(float(s.get("hours", 0.0)) for s in stores)}
    return out


def fine_tune_config(cfg: StemforgeConfig, lr_scale: float = 1.0) -> StemforgeConfig:
    """`cfg` for a fine-tune of a trained separator: `engine.retrain_warmup_steps` of linear warm-up and `lr_scale`
    x the peak learning rate (the bootstrap, trained from scratch, keeps `separator` as it is)."""
    update: dict[str, Any] = {}
    if lr_scale != 1.0:
        update["lr"] = cfg.separator.lr * lr_scale
    if cfg.engine.retrain_warmup_steps:
        update["warmup_steps"] = cfg.engine.retrain_warmup_steps
    if not update:
        return cfg
    separator = type(cfg.separator).model_validate({**cfg.separator.model_dump(), **update})  # re-checked, not copied
    return cfg.model_copy(update={"separator": separator})


def retrain_config(ctx: RunContext, clap: dict[str, Any] | None) -> StemforgeConfig:
    """The config a retrain and its control fine-tune with: `separator_config` at `engine.retrain_lr_scale` x the
    peak learning rate after `engine.retrain_warmup_steps` of warm-up (the same for both arms)."""
    cfg = separator_config(ctx, clap)
    return fine_tune_config(cfg, cfg.engine.retrain_lr_scale)


def retrain(ctx: RunContext, k: int, synthetic_out: dict[str, Any], corpus_out: dict[str, Any],
            init: dict[str, Any], tiers: dict[str, Any], clap: dict[str, Any] | None = None) -> dict[str, Any]:
    """separator_k: fine-tune separator k-1 on synthetic + the tiers it produced."""
    from engine.model_steps import retrain_streams, retrain_weights, tier_dirs, train_separator_step

    cfg = retrain_config(ctx, clap)
    tiers = training_tiers(ctx, k - 1, tiers)

    def fit() -> dict[str, Any]:
        weights = retrain_weights(cfg, tiers)
        streams = partial(retrain_streams, cfg, synthetic_out["dirs"]["train"], tiers, corpus_out["sources"],
                          cfg.run.seed + k)
        out = train_separator_step(ctx.ws, cfg, f"iter{k}", streams, synthetic_out["dirs"]["val"], cfg.engine.retrain_steps,
                                   init=init["checkpoint"], pick=cfg.engine.retrain_checkpoint,
                                   lineage={"iteration": k, "weights": weights,
                                            "tiers": {t: tier_dirs(v) for t, v in tiers.items()}})
        return {**out, "weights": weights}

    return ctx.step(f"separator_{k}", fit)


def control(ctx: RunContext, k: int, synthetic_out: dict[str, Any], init: dict[str, Any],
            clap: dict[str, Any] | None = None) -> dict[str, Any]:
    """control_k: the compute-matched control of separator_k - the same init (separator k-1), the same steps and
    seed, synthetic data only - so the engine's gain is separator_k over control_k, not over more training."""
    from engine.model_steps import train_separator_step
    from engine.ray_train import shard_streams

    cfg = retrain_config(ctx, clap)
    return ctx.step(f"control_{k}", lambda: {**train_separator_step(
        ctx.ws, cfg, f"control{k}", partial(shard_streams, [synthetic_out["dirs"]["train"]], cfg.separator.sample_rate),
        synthetic_out["dirs"]["val"], cfg.engine.retrain_steps, init=init["checkpoint"], pick=cfg.engine.retrain_checkpoint,
        lineage={"iteration": k, "data": "synthetic", "control_of": f"separator_{k}"}), "weights": {"synthetic": 1.0}})


def natural_eval_set(corpus_out: dict[str, Any]) -> dict[str, Any]:
    """The natural evaluation set of a run: `corpus.eval` (stems import), else the data corpus's own scenes; its
    `audit` is None when no stems exist (then the evaluation is label-free)."""
    return {"scenes": corpus_out.get("eval_scenes", corpus_out.get("scenes")),
            "audit": corpus_out.get("eval_audit", corpus_out.get("audit")), "dir": corpus_out.get("dir")}


def evaluate(ctx: RunContext, label: str, separator: dict[str, Any], corpus_out: dict[str, Any],
             synthetic_out: dict[str, Any], scorers: dict[str, dict[str, Any]], remote: bool = False) -> dict[str, Any]:
    """evaluate_<label>: the one evaluator (engine/evaluation.py) on the test split (synthetic tuples + natural
    scenes: reported) and on the stop rule's validation scenes (natural only: `val`). Natural scenes without stems
    get the label-free figures instead (engine_steps.label_free_evaluation); true SDR is then reported as
    unavailable, never as a number. `remote` (backend ray) evaluates in a Ray task of one CPU, so a flow can
    evaluate a control beside its separator (the same step function, seeded the same way: the same figures)."""
    from engine.engine_steps import label_free_evaluation
    from engine.evaluation import evaluate_checkpoint

    cfg = ctx.cfg
    natural = natural_eval_set(corpus_out)
    checkpoint = separator["checkpoint"]

    def run() -> dict[str, Any]:
        if natural["audit"] is None:
            test = evaluate_checkpoint(checkpoint, cfg, natural, synthetic_out["dirs"]["test"])  # synthetic only
            free = {split: label_free_evaluation(ctx.ws, cfg, label, corpus_out, checkpoint, separator["checkpoint_hash"],
                                                 scorers, split) for split in (cfg.engine.natural_eval_split, cfg.run.stop_split)}
            return {**test, "natural_truth": False, "label_free": free[cfg.engine.natural_eval_split],
                    "val": {"re_sdr_mean_db": free[cfg.run.stop_split].get("re_sdr_mean_db"),
                            "label_free": free[cfg.run.stop_split]}}
        test = evaluate_checkpoint(checkpoint, cfg, natural, synthetic_out["dirs"]["test"])
        try:
            val = evaluate_checkpoint(checkpoint, cfg, natural, None, split=cfg.run.stop_split)
        except ValueError as exc:  # no validation scenes with audit stems: the stop rule reads the label-free figure
            log.info("evaluate_%s: %s", label, exc)
            val = {}
        keep = ("natural_sdri_db", "natural_si_sdri_db", "natural_sdri_ci95_db", "natural_items", "natural_item_sdri",
                "natural_silent_share")
        return {**test, "natural_truth": True, "val": {k: val.get(k) for k in keep}}

    if label == "final":
        return _final_step(ctx, "evaluate_final", run, "eval/final", inputs={"separator": separator["checkpoint_hash"]})
    if remote and cfg.engine.backend == "ray" and ctx.ws.done(f"evaluate_{label}") is None:
        return as_ray_task(ctx, f"evaluate_{label}", "evaluate", label, separator, corpus_out, synthetic_out, scorers)[0]
    return ctx.step(f"evaluate_{label}", run)


def stop_value(cfg: StemforgeConfig, evaluation: dict[str, Any], filter_out: dict[str, Any] | None) -> float | None:
    """The stop rule's figure for one separator: its natural SDRi on the validation scenes (audit stems), or the
    label-free mean Re-SDR of its pseudo-labels of those scenes (`run.stop_metric`; auto = SDRi where it exists)."""
    metric = cfg.run.stop_metric
    sdri = (evaluation.get("val") or {}).get("natural_sdri_db")
    if metric == "natural_sdri" or (metric == "auto" and sdri is not None):
        return sdri
    if metric in ("re_sdr", "auto"):
        label_free = (evaluation.get("val") or {}).get("re_sdr_mean_db")  # no stems: the evaluation scored val
        if label_free is not None:
            return label_free
        if filter_out:
            return (filter_out.get("re_sdr_mean_db_by_split") or {}).get(cfg.run.stop_split)
    return None


def stop_metric_name(cfg: StemforgeConfig, evaluation: dict[str, Any]) -> str:
    metric = cfg.run.stop_metric
    if metric == "auto":
        metric = "natural_sdri" if (evaluation.get("val") or {}).get("natural_sdri_db") is not None else "re_sdr"
    return f"{metric} on the {cfg.run.stop_split} scenes"


def engine_vs_control(cfg: StemforgeConfig, engine_eval: dict[str, Any], control_eval: dict[str, Any],
                      split: str = "test") -> dict[str, Any]:
    """Paired mean and 95 % interval of separator_k minus control_k natural SDRi over the same scene queries."""
    from models.separator.evaluate import paired_ci

    a = engine_eval["natural_item_sdri"] if split == "test" else engine_eval["val"]["natural_item_sdri"]
    b = control_eval["natural_item_sdri"] if split == "test" else control_eval["val"]["natural_item_sdri"]
    res = paired_ci(a or {}, b or {}, seed=cfg.run.seed)
    return {"n": res["n"], "gain_db": None if res["n"] == 0 else round(res["mean"], 3),
            "ci95_db": None if res["ci95"] is None else [round(float(x), 3) for x in res["ci95"]]}


# ---- the final separator and judge -------------------------------------------------------------------------------

def _final_want(ctx: RunContext, inputs: Any) -> str:
    from storage.configio import config_hash

    blob = json.dumps(inputs, sort_keys=True, default=str)
    return f"{config_hash(ctx.cfg.engine.final)}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _final_current(ctx: RunContext, name: str, inputs: Any) -> bool:
    """Whether final step `name` has finished for the current `engine.final` and these inputs."""
    done = ctx.ws.done(name)
    return done is not None and done["outputs"].get("final_config") == _final_want(ctx, inputs)


def _final_step(ctx: RunContext, name: str, fn: Callable[[], dict[str, Any]], *dirs: str,
                inputs: Any = None) -> dict[str, Any]:
    """A final-stage step: `engine.final` is not part of the run's identity (changing it must not void the cycle),
    so each final step records the hash of that section and of its inputs (the separator it starts from, the
    tiers, the evaluation it compares with) and trains again, from a clean folder, when either changed."""
    import shutil

    want = _final_want(ctx, inputs)
    done = ctx.ws.done(name)
    if done is not None and done["outputs"].get("final_config") != want:
        log.info("%s: engine.final or its inputs changed: training the final stage again", name)
        ctx.ws.marker(name).unlink()
        for d in dirs:
            shutil.rmtree(ctx.root / d, ignore_errors=True)
    return ctx.step(name, lambda: {**fn(), "final_config": want})


def best_iteration(report_out: dict[str, Any]) -> int:
    """The cycle's best separator by the stop rule's figure on the validation scenes (never the test split): the
    one the final stage starts from. An iteration that did not pay is not kept just because it came last."""
    values = [(r.get("stop_value"), r["iteration"]) for r in report_out["iterations"]]
    known = [(v, k) for v, k in values if v is not None]
    return max(known, key=lambda vk: (vk[0], -vk[1]))[1] if known else report_out["iterations"][-1]["iteration"]


def final_separator(ctx: RunContext, synthetic_out: dict[str, Any], corpus_out: dict[str, Any], last: dict[str, Any],
                    tiers: dict[str, Any], clap: dict[str, Any] | None = None) -> dict[str, Any]:
    """final_separator: `engine.final.steps` on synthetic + `tiers` (retrain ratios), fine-tuned from the cycle's
    last separator (or from scratch for another preset, engine/final.py)."""
    from engine.final import final_separator_config
    from engine.model_steps import retrain_streams, retrain_weights, tier_dirs, train_separator_step

    cfg, from_last = final_separator_config(separator_config(ctx, clap))
    if from_last:
        cfg = fine_tune_config(cfg)

    def fit() -> dict[str, Any]:
        weights = retrain_weights(cfg, tiers)
        streams = partial(retrain_streams, cfg, synthetic_out["dirs"]["train"], tiers, corpus_out["sources"],
                          cfg.run.seed + 7919)
        init = last["checkpoint"] if from_last else None
        out = train_separator_step(ctx.ws, cfg, "final_train", streams, synthetic_out["dirs"]["val"], cfg.engine.final.steps,
                                   init=init, pick=cfg.engine.retrain_checkpoint, lineage={"final": True, "weights": weights,
                                                       "tiers": {t: tier_dirs(v) for t, v in tiers.items()}},
                                   workers=final_train_workers(cfg))
        return {**out, "weights": weights, "preset": cfg.separator.preset,
                "init": last["checkpoint_hash"] if from_last else None}

    return _final_step(ctx, "final_separator", fit, "final_train", "final",
                       inputs={"init": last["checkpoint_hash"], "tiers": tiers, "synthetic": synthetic_out["dirs"]})


def final_train_workers(cfg: StemforgeConfig) -> int:
    """DDP ranks of the final separator: `engine.final.train_workers`, else `engine.train_workers` (a fit trains on
    fewer where the Ray cluster has fewer CPUs: engine/ray_train.py `placeable_workers`)."""
    return int(cfg.engine.final.train_workers or cfg.engine.train_workers)


def final_judge_current(ctx: RunContext, judge: dict[str, Any]) -> bool:
    """Whether the final judge has finished for this `engine.final` and this run's judge (nothing left to train)."""
    return _final_current(ctx, "final_judge", {"judge": judge["checkpoint_hash"]})


def final_judge(ctx: RunContext, corpus_out: dict[str, Any], judge: dict[str, Any], remote: bool = False) -> dict[str, Any]:
    """final_judge: the run's judge fine-tuned on ratings (engine/final.py). It needs only the corpus and the run's
    judge, not the cycle, so `remote` (backend ray) trains it as a Ray task in its own process, one CPU - the
    relabel cycle starts it on the core the bootstrap separator leaves free - and writes the marker the in-process
    path writes; train_final then resumes it."""
    from engine.final import train_final_judge

    if remote and ctx.cfg.engine.backend == "ray" and not final_judge_current(ctx, judge):
        return as_ray_task(ctx, "final_judge", "final_judge", corpus_out, judge)[0]
    return _final_step(ctx, "final_judge", lambda: train_final_judge(ctx.ws, ctx.cfg, judge, corpus_out["sources"]),
                       "final_judge", inputs={"judge": judge["checkpoint_hash"]})


def release(ctx: RunContext, report_out: dict[str, Any], separator: dict[str, Any], judge: dict[str, Any],
            evaluation: dict[str, Any], last_evaluation: dict[str, Any], tiers: dict[str, Any],
            synthetic_out: dict[str, Any], tiers_from: str) -> dict[str, Any]:
    """release: `<run>/final/` with both checkpoints, the model card and the evaluation tables; `last_evaluation`
    is the evaluation of the separator the final one started from (the paired gain)."""
    from engine.final import write_release
    from models.separator.evaluate import paired_ci

    def write() -> dict[str, Any]:
        res = paired_ci(evaluation.get("natural_item_sdri") or {}, last_evaluation.get("natural_item_sdri") or {},
                        seed=ctx.cfg.run.seed)
        gain = {"n": res["n"], "gain_db": None if res["n"] == 0 else round(res["mean"], 3),
                "ci95_db": None if res["ci95"] is None else [round(float(x), 3) for x in res["ci95"]]}
        return write_release(ctx.root, ctx.cfg, ctx.ws.config_hash, report_out, {**separator, "gain_vs_init": gain},
                             judge, evaluation, tiers, synthetic_out, tiers_from)

    return _final_step(ctx, "release", write, "final", inputs={
        "separator": separator["checkpoint_hash"], "judge": judge["checkpoint_hash"], "tiers_from": tiers_from,
        "last": last_evaluation.get("natural_item_sdri"), "report": report_out.get("config_hash"),
        "iterations": [r.get("separator_hash") for r in report_out["iterations"]]})


# ---- the report --------------------------------------------------------------------------------------------------

FILTER_KEYS = ("candidates", "kept_itt", "kept_sst", "kept_hours_itt", "kept_hours_sst", "re_sdr_mean_db",
               "prop_re_sdr_gt15", "prop_re_sdr_gt10", "scenes_labelled", "scene_hours", "scenes_skipped_min_events")


def report(ctx: RunContext, results: dict[str, Any], total_seconds: float, session: Any = None) -> dict[str, Any]:
    """report.json / report.md / plots from the cycle's results (what the flows collected, see flows/cycle.py).

    Headline: on the held-out (test) natural scenes, the last separator's gain over its compute-matched control
    and over iteration 0 (paired over the same scene queries, 95 % intervals); the stop rule's validation figures
    and the reason the cycle stopped beside them."""
    from engine.evaluation import REPORT_KEYS
    from engine.report import write_report
    from models.separator.evaluate import paired_ci

    cfg = ctx.cfg
    seps, evals = results["separators"], results["evals"]
    filters = {int(k): v for k, v in results.get("filters", {}).items()}
    controls = {int(k): v for k, v in results.get("controls", {}).items()}
    control_evals = {int(k): v for k, v in results.get("control_evals", {}).items()}
    iterations = []
    for k, (sep, ev) in enumerate(zip(seps, evals)):
        f = filters.get(k, {})
        row = {"iteration": k, "separator_checkpoint": sep["checkpoint"], "separator_hash": sep["checkpoint_hash"],
               **{key: ev.get(key) for key in REPORT_KEYS}, **{key: f.get(key) for key in FILTER_KEYS},
               "val_natural_sdri_db": (ev.get("val") or {}).get("natural_sdri_db"),
               "val_natural_items": (ev.get("val") or {}).get("natural_items"),
               "stop_value": stop_value(cfg, ev, filters.get(k)),
               "rejections": f.get("rejections", {}), "train_weights": sep.get("weights"),
               "natural_truth": ev.get("natural_truth", True), "label_free": ev.get("label_free")}
        if k in control_evals:
            cev = control_evals[k]
            row["control_natural_sdri_db"] = cev.get("natural_sdri_db")
            row["control_sdri_db"] = cev.get("sdri_db")
            row["control_val_natural_sdri_db"] = (cev.get("val") or {}).get("natural_sdri_db")
            row["gain_vs_control"] = engine_vs_control(cfg, ev, cev)
            row["control_checkpoint"] = controls.get(k, {}).get("checkpoint")
        if k > 0:
            res = paired_ci(ev.get("natural_item_sdri") or {}, evals[0].get("natural_item_sdri") or {}, seed=cfg.run.seed)
            row["gain_vs_iteration0"] = {"n": res["n"], "gain_db": None if res["n"] == 0 else round(res["mean"], 3),
                                         "ci95_db": None if res["ci95"] is None else [round(float(x), 3) for x in res["ci95"]]}
        iterations.append(row)
    last = iterations[-1]
    headline = {"iterations": len(iterations) - 1, "stopped": results.get("stop"),
                "gain_vs_control": last.get("gain_vs_control"), "gain_vs_iteration0": last.get("gain_vs_iteration0"),
                "natural_split": cfg.engine.natural_eval_split, "stop_split": cfg.run.stop_split}
    last_filter = filters.get(max(filters)) if filters else None
    last_table = None
    if last_filter and last_filter.get("candidates_table"):
        from pipelines.filters.table import read_candidates

        last_table = read_candidates(last_filter["candidates_table"])
    # per-item figures serve the paired comparisons above; they stay in the evaluate markers, not the report
    for row in iterations:
        row.pop("natural_item_sdri", None)
    out = {
        "name": ctx.name, "config_hash": ctx.ws.config_hash, "headline": headline, "iterations": iterations,
        "decisions": results.get("decisions", []),
        "scorers": {k: {kk: v.get(kk) for kk in ("checkpoint", "checkpoint_hash", "heldout", "heldout_zero_shot_top1",
                                                 "proxy_acc")} for k, v in results["scorers"].items()},
        "corpus": results["corpus"].get("summary"), "synthetic": results["synthetic"]["counts"],
        "last_filter": last_filter, "timings": dict(ctx.ws.timings), "cpu_timings": dict(ctx.ws.cpu_timings),
        "resumed_steps": list(ctx.ws.resumed_steps), "ray": session.to_dict() if session is not None else None,
        # where the scorers trained when they ran as Ray tasks in this invocation (pid, host, seconds)
        "scorer_tasks": {f"scorer_{k}": v["ran_in"] for k, v in results["scorers"].items() if v.get("ran_in")},
        "total_seconds": total_seconds,
    }
    out["files"] = write_report(ctx.root, out, last_table)
    return out


def review_page(ctx: RunContext) -> str | None:
    """(Re)build the run's static review page `<run>/review/index.html` from what the run wrote (engine/review):
    rebuilt on every invocation, like the report, so it always shows the run's current state. A page that cannot be
    built is a warning, never a failed run (the run's results do not depend on it)."""
    if ctx.cfg.engine.review_per_filter <= 0:
        return None
    from engine.review import ReviewError, build_review

    try:
        return str(build_review(ctx.root, per_filter=ctx.cfg.engine.review_per_filter, seed=ctx.cfg.run.seed))
    except (ReviewError, OSError, ValueError) as exc:
        log.warning("review page of %s not built: %s", ctx.root, exc)
        return None


_ACTIVE_SESSIONS: list[Any] = []  # the outermost backend session of this process first


@contextmanager
def backend_session(cfg: StemforgeConfig) -> Iterator[Any]:
    """`engine.backend: ray`: one `ray_session` around the block (started, joined or reused); `inprocess`: None.
    Nested blocks (a sub-flow inside its parent) get the outer session, so the report says how the run's Ray was
    reached (started, joined), not that an inner block reused it."""
    if cfg.engine.backend != "ray":
        yield None
        return
    if _ACTIVE_SESSIONS:
        yield _ACTIVE_SESSIONS[0]
        return
    from engine.ray_runtime import ray_session

    with ray_session(cfg.engine.ray) as session:
        _ACTIVE_SESSIONS.append(session)
        try:
            yield session
        finally:
            _ACTIVE_SESSIONS.remove(session)


def ray_cpus() -> float:
    """CPUs of the Ray cluster this process is connected to (the flows size their concurrency by it)."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))
