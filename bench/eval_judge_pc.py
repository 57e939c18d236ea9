"""Train the mini judge and the mini PC estimator on the demo corpus and report how well they do.

Reports (markdown + JSON):
- judge: PCC / SRCC / MAE per axis on held-out PROXY-rated tuples built only from the corpus's val/test clips
  (goal: overall PCC >= 0.8), and the proxy pre-training accuracy;
- PC: PCC / SRCC to the proxy target on held-out mixtures, mean PC per number of sources (with / without
  background), and how often `PC < 2.5` separates "single clean source" from the rest;
- CPU scoring throughput (clips/s, 10 s clips, batch 16) of judge/mini, pc/mini and pc/audiobox (the real-size
  WavLM network with random weights, loaded from a checkpoint file in the release format);
- wall-clock training time and the torch thread count (the figure depends on the machine's load: say so).

    .venv/bin/python bench/eval_judge_pc.py --corpus /tmp/demo --out docs/perf/judge_pc.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.run_config import load  # noqa: E402
from models.aesthetics.train import build_model as build_pc_model, evaluate_pc, save_pc, train_pc  # noqa: E402
from models.judge.train import build_model as build_judge_model, evaluate_proxy, save_judge, train_proxy_and_ratings  # noqa: E402
from models.judge.tuples import SourcePool  # noqa: E402


def label_texts(labels: list[str]) -> dict[str, list[str]]:
    from pipelines.mixing.prompts import make_prompt, phrase_for

    rng = np.random.default_rng(0)
    return {lab: [phrase_for(lab), phrase_for(lab)] + [make_prompt("extract", [lab], rng) for _ in range(2)] for lab in labels}


def throughput(fn, batch: np.ndarray, repeats: int = 2) -> float:
    fn(batch[:2])  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(batch)
    return repeats * len(batch) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="demo corpus directory (created with `stemforge corpus demo` if absent)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "judge_pc.md"))
    ap.add_argument("--ckpt-dir", default=None, help="where to keep the trained checkpoints (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, e.g. judge.finetune_steps=300")
    ap.add_argument("--no-audiobox", action="store_true", help="skip the real-size audiobox throughput figure")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load(None, args.overrides)
    corpus = Path(args.corpus)
    if not (corpus / "manifests" / "sources").exists():
        subprocess.run([sys.executable, "-m", "flows.cli", "corpus", "demo", "--out", str(corpus), "-q"], cwd=ROOT, check=True)
    manifest = corpus / "manifests" / "sources"
    ckpt_dir = Path(args.ckpt_dir or tempfile.mkdtemp(prefix="judge_pc_"))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cpu")
    res: dict = {"corpus": str(corpus.resolve()), "threads": args.threads, "overrides": args.overrides}

    jc, pc = cfg.judge, cfg.pc
    train = SourcePool.from_manifest(manifest, jc.sample_rate, ("train",), jc.max_clips, jc.seed)
    held = SourcePool.from_manifest(manifest, jc.sample_rate, ("val", "test"), jc.max_clips, jc.seed)
    texts = label_texts(sorted(set(train.labels) | set(held.labels)))
    res["clips"] = {"train": len(train.clips), "heldout": len(held.clips), "labels": len(train.label_names)}

    judge = build_judge_model(jc)
    rep = train_proxy_and_ratings(judge, train, jc, dev, texts)
    judge_eval = evaluate_proxy(judge, held, jc, dev, texts)
    save_judge(ckpt_dir / "judge.pt", judge, jc, meta={"heldout": judge_eval})
    res["judge"] = {"train_seconds": rep.seconds, "pretrain_steps": rep.pretrain_steps, "finetune_steps": rep.finetune_steps,
                    "batch": jc.train_batch, "clip_seconds": jc.clip_seconds, "proxy_task_acc": rep.proxy_acc,
                    "heldout": judge_eval}
    print(json.dumps(res["judge"], indent=1), flush=True)

    pcm = build_pc_model(pc)
    secs = train_pc(pcm, train, pc, dev)
    pc_eval = evaluate_pc(pcm, held, pc, dev)
    save_pc(ckpt_dir / "pc.pt", pcm, pc, meta={"heldout": pc_eval})
    res["pc"] = {"train_seconds": secs, "steps": pc.steps, "batch": pc.train_batch, "clip_seconds": pc.clip_seconds,
                 "heldout": pc_eval}
    print(json.dumps(res["pc"], indent=1), flush=True)

    # throughput through the public scorers (load from checkpoint, 10 s clips, batch 16)
    from models.aesthetics import PCConfig, build_pc
    from models.judge import JudgeConfig, build_judge

    rng = np.random.default_rng(0)
    clips = (0.1 * rng.standard_normal((16, 160_000))).astype(np.float32)
    tp = {}
    js = build_judge(JudgeConfig(checkpoint=str(ckpt_dir / "judge.pt"), device="cpu", batch_size=16))
    tp["judge/mini"] = throughput(lambda b: js.score(b, b * 0.5, ["a dog barking"] * len(b), 16000), clips)
    ps = build_pc(PCConfig(checkpoint=str(ckpt_dir / "pc.pt"), device="cpu", batch_size=16))
    tp["pc/mini"] = throughput(lambda b: ps.score(b, 16000), clips)
    if not args.no_audiobox:
        from models.aesthetics.audiobox import AesNet, AXES, AudioboxPCScorer

        from audiobox_aesthetics.model.aes import AesMultiOutput
        model_cfg = {k: getattr(AesMultiOutput, k) for k in ("proj_num_layer", "proj_ln", "proj_act_fn", "proj_dropout",
                     "nth_layer", "use_weighted_layer_sum", "precision", "normalize_embed", "output_dim")}
        net = AesNet(model_cfg)
        path = ckpt_dir / "audiobox_random.pth"
        torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}, "model_cfg": model_cfg,
                    "target_transform": {a: {"mean": 5.0, "std": 1.0} for a in AXES}}, path)
        del net
        ab = AudioboxPCScorer(str(path), "cpu", 16)
        tp["pc/audiobox (WavLM base, random weights)"] = throughput(lambda b: ab.score(b, 16000), clips, repeats=1)
        path.unlink()
    res["throughput_clips_per_s"] = tp
    print(json.dumps(tp, indent=1), flush=True)
    write_report(Path(args.out), res)


def write_report(path: Path, res: dict) -> None:
    from storage.atomic import atomic_write_text

    j, p = res["judge"], res["pc"]
    lines = [
        "# Judge and PC estimator: held-out quality and CPU throughput",
        "",
        f"Produced by `bench/eval_judge_pc.py` on `{res['corpus']}` ({res['clips']['train']} train clips, "
        f"{res['clips']['heldout']} held-out val/test clips, {res['clips']['labels']} labels), torch threads = "
        f"{res['threads']}, overrides {res['overrides'] or 'none'}. Ratings and PC targets are PROXIES built from "
        "ground truth (models/judge/proxy_ratings.py, models/aesthetics/mini.py), not human ratings.",
        "",
        f"## Judge (mini): {j['pretrain_steps']} proxy pre-training + {j['finetune_steps']} fine-tuning steps, "
        f"batch {j['batch']}, {j['clip_seconds']} s clips, {j['train_seconds']:.0f} s wall clock",
        "",
        f"Proxy task accuracy (does the output contain the prompted target?), last 20 training batches: "
        f"{j['proxy_task_acc']:.2f}. Held-out proxy-rated tuples: n = {j['heldout']['n']}.",
        "",
        "| axis | PCC | SRCC | MAE |",
        "| --- | --- | --- | --- |",
    ]
    for axis, m in j["heldout"]["axes"].items():
        lines.append(f"| {axis} | {m['pcc']:.3f} | {m['srcc']:.3f} | {m['mae']:.3f} |")
    goal = j["heldout"]["axes"]["overall"]["pcc"]
    lines += ["", f"Goal overall PCC >= 0.8: {'met' if goal >= 0.8 else 'NOT met'} ({goal:.3f}).", "",
              f"## PC estimator (mini): {p['steps']} steps, batch {p['batch']}, {p['clip_seconds']} s clips, "
              f"{p['train_seconds']:.0f} s wall clock", "",
              f"Held-out mixtures n = {p['heldout']['n']}: PCC {p['heldout']['pcc']:.3f}, SRCC {p['heldout']['srcc']:.3f}, "
              f"MAE {p['heldout']['mae']:.3f} (PC units).", "",
              "| sources | mean PC, no background | mean PC, with background |", "| --- | --- | --- |"]
    by = p["heldout"]["mean_pc_by_sources"]
    for k in sorted({key.split("_")[0] for key in by}, key=int):
        a, b = by.get(f"{k}_no_bg"), by.get(f"{k}_with_bg")
        lines.append(f"| {k} | {'-' if a is None else f'{a:.2f}'} | {'-' if b is None else f'{b:.2f}'} |")
    lines += ["", f"Single clean sources scored < 2.5: {100 * p['heldout']['single_clean_below_2.5']:.0f}%; "
              f"mixtures of >= 2 sources scored >= 2.5: {100 * p['heldout']['multi_source_at_or_above_2.5']:.0f}%; "
              f"agreement of the `PC < 2.5` decision with the proxy target: {100 * p['heldout']['threshold_agreement']:.0f}%.",
              "", "## CPU scoring throughput (10 s clips at 16 kHz, batch 16)", "", "| scorer | clips/s |", "| --- | --- |"]
    for name, v in res["throughput_clips_per_s"].items():
        lines.append(f"| {name} | {v:.2f} |")
    lines += ["", "Timings were taken on a 2-core machine shared with other jobs; treat them as lower bounds.", ""]
    atomic_write_text(path, "\n".join(lines))
    atomic_write_text(path.with_suffix(".json"), json.dumps(res, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
