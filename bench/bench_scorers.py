"""Scoring throughput of every scorer backend: clips/s for 10 s clips in batches of 16.

Each backend runs in its own interpreter (laion-clap needs HF_HOME set before transformers is imported, and one
backend's threads must not skew another's). Backends without shipped weights are measured with randomly
initialised weights of the real architecture (speed does not depend on the weight values):
- mini: a checkpoint from `stemforge train clap` (default runs/bench/clap_mini.pt from bench/eval_clap.py);
- hf: transformers ClapModel with the default (laion/clap-htsat-unfused-sized) config, random weights;
- laion: laion-clap HTSAT-tiny + a full-size random roberta-base in a temporary offline HF cache;
- judge / pc: helper F's scorers via `models.judge.build_judge` / `models.aesthetics.build_pc` (need --judge/--pc).

Usage: .venv/bin/python bench/bench_scorers.py [--backends mini,hf,laion,judge,pc] [--batches 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SR, SECONDS, BATCH = 16000, 10.0, 16
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORDS = "a dog barking the sound of rain falling piano playing siren wailing engine idling".split()


def clips(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(int(SR * SECONDS)) / SR
    return np.stack([(0.1 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32) for _ in range(n)])


def _bpe(folder: Path):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 3, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    return bpe


def build(backend: str, args: argparse.Namespace, tmp: Path):
    if backend == "mini":
        from models.clap.base import build_clap
        from models.clap.config import ClapConfig

        return build_clap(ClapConfig(backend="mini", checkpoint=args.mini, batch_size=BATCH))
    if backend == "hf":
        from transformers import ClapConfig as HFConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

        from models.clap.base import build_clap
        from models.clap.config import ClapConfig

        (tmp / "tok").mkdir()
        _bpe(tmp / "tok")
        ClapModel(HFConfig()).save_pretrained(tmp / "hf")
        ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=RobertaTokenizer.from_pretrained(tmp / "tok")).save_pretrained(tmp / "hf")
        return build_clap(ClapConfig(backend="hf", checkpoint=str(tmp / "hf"), batch_size=BATCH))
    if backend == "laion":
        import torch
        from transformers import RobertaConfig, RobertaModel

        snap = Path(os.environ["HF_HOME"]) / "hub" / "models--roberta-base" / "snapshots" / COMMIT
        snap.mkdir(parents=True)
        (snap.parents[1] / "refs").mkdir()
        (snap.parents[1] / "refs" / "main").write_text(COMMIT)
        bpe = _bpe(snap)
        RobertaModel(RobertaConfig(vocab_size=bpe.get_vocab_size(), max_position_embeddings=514, pad_token_id=1)).save_pretrained(snap)
        import laion_clap

        from models.clap.base import build_clap
        from models.clap.config import ClapConfig

        ref = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
        torch.save({"state_dict": ref.model.state_dict()}, tmp / "laion.pt")
        del ref
        return build_clap(ClapConfig(backend="laion", checkpoint=str(tmp / "laion.pt"), batch_size=BATCH))
    if backend == "judge":
        from engine.run_config import load
        from models.judge import build_judge

        return build_judge(load().judge.model_copy(update={"checkpoint": args.judge, "batch_size": BATCH}))
    if backend == "pc":
        from engine.run_config import load
        from models.aesthetics import build_pc

        return build_pc(load().pc.model_copy(update={"checkpoint": args.pc, "batch_size": BATCH}))
    raise ValueError(backend)


def measure_one(backend: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        scorer = build(backend, args, Path(d))
        load_s = time.perf_counter() - t0
        audio = clips(BATCH)
        texts = ["a dog barking"] * BATCH

        def run() -> None:
            if backend == "judge":
                scorer.score(audio, audio, texts, SR)
            elif backend == "pc":
                scorer.score(audio, SR)
            else:
                scorer.score(texts, audio, SR)

        run()  # warm-up
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(args.batches):
            run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        n = BATCH * args.batches
        return {"backend": backend, "clips": n, "wall_s": wall, "cpu_s": cpu, "clips_per_s": n / wall,
                "clips_per_cpu_s": n / cpu, "load_s": load_s, "info": scorer.info(), "threads": args.threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="mini,hf,laion,judge,pc")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mini", default=str(REPO / "runs" / "bench" / "clap_mini.pt"))
    ap.add_argument("--judge", default=None, help="judge checkpoint (skipped when absent)")
    ap.add_argument("--pc", default=None, help="pc checkpoint (skipped when absent)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args)))
        return
    rows = []
    for backend in args.backends.split(","):
        if (backend == "judge" and not args.judge) or (backend == "pc" and not args.pc) or (backend == "mini" and not Path(args.mini).exists()):
            print(f"{backend}: skipped (no checkpoint given)", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as hf_home:
            env = {**os.environ, "HF_HOME": hf_home, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
                   "PYTHONPATH": str(REPO)}
            cmd = [sys.executable, __file__, "--one", backend, "--batches", str(args.batches), "--threads", str(args.threads),
                   "--mini", args.mini] + (["--judge", args.judge] if args.judge else []) + (["--pc", args.pc] if args.pc else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{backend}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"| scorer backend | clips/s (wall) | clips per CPU-s | load s | version |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['clips_per_s']:.2f} | {r['clips_per_cpu_s']:.2f} | {r['load_s']:.1f} | {r['info']['version']} |")


if __name__ == "__main__":
    main()
