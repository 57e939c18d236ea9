"""Filter step (pseudo-label + score + decide) on the demo scenes: Ray executor vs in-process, same machine.

Reuses a run directory that has finished `scorer_pc` (`runs/demo` after `make run`), or builds a small one
(`--build`: tiny budgets, a few scenes; minutes). Each backend runs the filter step into its own fresh sink, so
both compute every task; the Ray figure includes Ray's start-up only when `--include-startup` is given (the run
starts Ray once for all its steps). Prints wall seconds per backend and the ratio in-process / Ray (goal >= 0.9),
and checks that both candidates tables agree. `--repeat N` runs the arms in N alternating rounds and reports each
arm's median (as bench_ray_mixing.py) and each round's own ratio: on a 2-core machine one round's ratio moved
between 0.78 and 1.10, and three-round medians between 0.80 and 0.95 (`bench_ray.py` runs six rounds).

Both arms get one core's compute (the ratio is Ray's overhead, not a thread count): torch runs `separator.threads`
intra-op threads in either arm, and the BLAS/OpenMP pools run `--blas-threads` (default 1, what Ray gives a 1-CPU
actor through OMP_NUM_THREADS). Without it the in-process arm's numpy had two OpenBLAS threads where the actor had
one (`--blas-threads 0` leaves the environment as it is, to measure that).

    .venv/bin/python bench/bench_ray_filter.py [--run runs/demo] [--build] [--scenes N] [--repeat N] [--blas-threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SMALL = [
    "corpus.demo.sources_per_class={train: 3, val: 1, test: 1}",
    "corpus.demo.classes=[dog, siren, piano, rain, bird, engine]",
    "corpus.demo.workers=1",
    "engine.synthetic_counts={train: 24, val: 4, test: 4}",
    "engine.separator_steps=4",
    "engine.scorer_steps={clap: 3, judge_pretrain: 2, judge_finetune: 2, pc: 2}",
    "separator.steps_per_epoch=2",
    "separator.batch_size=4",
    "separator.val_max=4",
    "judge.max_clips=24",
    "pc.max_clips=24",
]


def build_small(root: Path, cfg) -> tuple[dict, dict, dict]:
    """Demo corpus, an untrained tiny separator (same compute as a trained one) and tiny-budget mini scorers."""
    from engine.data_steps import step_corpus
    from engine.model_steps import train_clap_step, train_judge_step, train_pc_step
    from engine.workspace import Workspace
    from models.separator.checkpoint import Checkpoint, save_checkpoint, trainable_state
    from models.separator.presets import build_model, model_hparams
    from models.text import load_text_encoder
    from storage.configio import config_hash
    from storage.manifests import file_hash

    ws = Workspace.open(root, config_hash(cfg), restart=True, allow_config_change=True)
    corpus = step_corpus(ws, cfg)
    scfg = cfg.separator
    model = build_model(scfg.preset, model_hparams(scfg, load_text_encoder(scfg.text_encoder).dim))
    ckpt = ws.path("iter0", "separator", "best.pt")
    save_checkpoint(ckpt, Checkpoint(scfg.preset, model.hparams, trainable_state(model), scfg.text_encoder, scfg.model_dump()))
    separator = {"checkpoint": str(ckpt), "checkpoint_hash": file_hash(ckpt)[:16]}
    scorers = {"clap": train_clap_step(ws, cfg, corpus["sources"]), "judge": train_judge_step(ws, cfg, corpus["sources"]),
               "pc": train_pc_step(ws, cfg, corpus["sources"])}
    return corpus, separator, scorers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"), help="run directory that finished scorer_pc")
    ap.add_argument("--build", action="store_true", help="build a small run under a temp dir instead")
    ap.add_argument("--scenes", type=int, default=12, help="train scenes of the built run")
    ap.add_argument("--repeat", type=int, default=1, help="alternating rounds of all arms; medians reported")
    ap.add_argument("--include-startup", action="store_true", help="count Ray's start-up in the Ray figure")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both backends, e.g. --set 'engine.replicas=[2, 2]'")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="OMP/OpenBLAS/MKL threads of both arms (set before numpy loads; 0 = leave the environment)")
    args = ap.parse_args()
    if args.blas_threads > 0:  # before numpy is imported: the pools size themselves at load; Ray's workers inherit it
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from engine.determinism import seed_step
    from engine.engine_steps import step_filter
    from engine.workspace import Workspace
    from engine.run_config import load
    from pipelines.filters.table import read_candidates
    from storage.configio import config_hash

    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_filter_"))
    if args.build:
        cfg = load(None, [*SMALL, f"corpus.demo.scenes={{train: {args.scenes}, val: 1, test: 1}}", "engine.backend=inprocess", *args.overrides])
        t0 = time.perf_counter()
        corpus, separator, scorers = build_small(tmp / "run", cfg)
        print(f"built a small corpus, separator and scorers in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    else:
        root = Path(args.run)
        cfg = load(root / "config.resolved.yaml" if (root / "config.resolved.yaml").exists() else None, args.overrides)
        result = {p.stem: json.loads(p.read_text())["outputs"] for p in (root / "steps").glob("*.json")}
        corpus, separator = result["corpus"], result["separator_0"]
        scorers = {k: result[f"scorer_{k}"] for k in ("clap", "judge", "pc")}

    import numpy as np

    # in-process; Ray with one actor (its overhead alone, same core count); Ray with the config's actors if more
    arms: list[tuple[str, str, list[int] | None]] = [("inprocess", "inprocess", None), ("ray_1_actor", "ray", [1, 1])]
    if list(cfg.engine.replicas) != [1, 1]:
        arms.append((f"ray_{cfg.engine.replicas[1]}_actors", "ray", list(cfg.engine.replicas)))
    samples: dict[str, list[float]] = {arm: [] for arm, _, _ in arms}
    tables = {}
    for arm, backend, replicas in arms * max(1, args.repeat):  # alternating rounds: every arm once per round
        update: dict = {"backend": backend} if replicas is None else {"backend": backend, "replicas": replicas}
        bcfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update=update)})
        ws = Workspace.open(tmp / f"ws-{arm}", config_hash(bcfg), restart=True, allow_config_change=True)
        ctx = None
        if backend == "ray" and not args.include_startup:
            from engine.ray_runtime import ray_session

            ctx = ray_session(bcfg.engine.ray)
            ctx.__enter__()
        # the state `stemforge run` gives every step (engine/determinism.py): torch on `separator.threads` intra-op
        # threads, as in a Ray actor of `engine.actor_cpus` CPUs - the in-process figure is one core's, like one actor's
        seed_step(bcfg.run.seed, "filter_0", bcfg.separator.threads)
        t0 = time.perf_counter()
        stats = step_filter(ws, bcfg, 0, corpus, separator, scorers)
        samples[arm].append(time.perf_counter() - t0)
        if ctx is not None:
            ctx.__exit__(None, None, None)
        tables[arm] = read_candidates(stats["candidates_table"]) if stats["candidates_table"] else {}
        print(f"{arm:13s}: {samples[arm][-1]:7.2f} s, {stats['candidates']} candidates, "
              f"{stats['kept_itt']} kept ITT, groups {[g['stages'] for g in stats['executor']['groups']]}", file=sys.stderr)

    def agree(a: dict, b: dict) -> bool:
        return set(a) == set(b) and all(
            np.allclose(np.asarray(a[c], float), np.asarray(b[c], float), equal_nan=True, atol=1e-4)
            if np.asarray(a[c]).dtype.kind in "fiub" else list(a[c]) == list(b[c]) for c in a)

    timings = {arm: float(np.median(v)) for arm, v in samples.items()}
    result: dict = {"inprocess_s": round(timings["inprocess"], 2), "goal": 0.9, "rounds": max(1, args.repeat),
                    "blas_threads": args.blas_threads or os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                    "samples_s": {arm: [round(x, 2) for x in v] for arm, v in samples.items()}}
    same = True
    for arm, _, _ in arms[1:]:
        ok = agree(tables["inprocess"], tables[arm])
        same = same and ok
        result[f"{arm}_s"] = round(timings[arm], 2)
        result[f"ratio_inprocess_over_{arm}"] = round(timings["inprocess"] / timings[arm], 3)
        # each round's own ratio (its arms ran minutes apart, not hours): the spread the median is read against
        result[f"round_ratios_inprocess_over_{arm}"] = [round(a / b, 3) for a, b in zip(samples["inprocess"], samples[arm])]
        result[f"{arm}_table_agrees"] = bool(ok)
    print(json.dumps(result))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
