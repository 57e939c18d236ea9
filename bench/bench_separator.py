"""Separator benchmark: quality after a step budget on the demo corpus, absent-class silence, and speed.

    .venv/bin/python bench/bench_separator.py --corpus DIR --steps 2950 --workers 2 --out bench_out/separator
    .venv/bin/python bench/bench_separator.py --speed-only

Quality: `tiny` is trained on 2-3 source mixtures generated on the fly from the demo corpus' clean *train* sources
(SNR of each interferer uniform in [-3, 10] dB below the target, query = the class phrase/label, ClearSep query
modes), validated on *val* sources, and evaluated on a fixed set of mixtures built from held-out *test* sources:
SI-SDRi / SDRi per class and overall, plus one absent-class query per test mixture (Silence-SDR).
The test set is 1024 mixtures by default: they reuse the 80 held-out clips and the mean SI-SDRi is heavy-tailed,
so 96 mixtures moved it by ~1 dB between draws (docs/perf/separator.md).
Arms (`--arms`): `remedy` (presence gate + 20% silence augmentation; evaluated at gate thresholds 0.5, 0.3, off) and `baseline`
(no gate, the paper's 5% silence augmentation) so Silence-SDR is reported with and without the remedy.

Speed: separation throughput of `tiny` on CPU at batch 16 and batch 1 (x real time), and the full-size `clapsep`
time per 10 s clip. Results go to OUT/results.json and are printed; the figures are copied into
docs/perf/separator.md by hand together with the machine load they were measured under.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def load_sources(corpus: Path, sr: int) -> dict[str, dict[str, list[np.ndarray]]]:
    """{split: {label: [clip, ...]}} from the demo corpus' clean-source manifest."""
    from storage.audio import AudioConfig, load_audio
    from storage.manifests import iter_rows

    out: dict[str, dict[str, list[np.ndarray]]] = {}
    acfg = AudioConfig(sample_rate=sr)
    for row in iter_rows(corpus / "manifests" / "sources", expect="source_clip"):
        out.setdefault(row["split"], {}).setdefault(row["labels"][0], []).append(load_audio(row["path"], acfg))
    if "train" not in out:
        raise SystemExit(f"{corpus}: no train split in manifests/sources")
    return out


class OnTheFlyMixtures:
    """`n` (default: a million, i.e. never exhausted) 2-3 source mixtures in the shard sample format; mixture i is a
    pure function of (seed, i), so the trainer can index it like any other sample source."""

    def __init__(self, pool: dict[str, list[np.ndarray]], sr: int, seconds: float, seed: int, n: int | None = None,
                 silent_every: int = 0):
        self.pool, self.sr, self.len, self.seed, self.n, self.silent_every = pool, sr, int(seconds * sr), seed, n or 10**6, silent_every
        self.labels = sorted(pool)

    def _clip(self, rng: np.random.Generator, label: str) -> np.ndarray:
        clips = self.pool[label]
        x = clips[int(rng.integers(len(clips)))]
        if len(x) >= self.len:
            s = int(rng.integers(0, len(x) - self.len + 1))
            return x[s:s + self.len].astype(np.float32)
        return np.pad(x, (0, self.len - len(x))).astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(self.n))

    def metas(self) -> list[dict[str, Any]]:
        """The classes (the trainer's query vocabulary) without rendering a million mixtures."""
        return [{"target_labels": [lab], "positive_labels": [lab]} for lab in self.labels]

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(2, 4))
        labels = [self.labels[j] for j in rng.choice(len(self.labels), size=k, replace=False)]
        tgt = self._clip(rng, labels[0])
        t_rms = np.sqrt(np.mean(tgt ** 2)) + 1e-8
        res = np.zeros_like(tgt)
        for lab in labels[1:]:
            x = self._clip(rng, lab)
            x *= t_rms / (np.sqrt(np.mean(x ** 2)) + 1e-8) * 10 ** (-rng.uniform(-3, 10) / 20)
            res += x
        mix = tgt + res
        peak = np.abs(mix).max()
        if peak > 0.95:
            mix, tgt, res = (a * (0.95 / peak) for a in (mix, tgt, res))
        mode = ["pos", "neg", "posneg"][int(rng.choice(3, p=[0.25, 0.25, 0.5]))]
        silent = bool(self.silent_every) and i % self.silent_every == self.silent_every - 1
        pos = labels[0]
        if silent:
            pos = [c for c in self.labels if c not in labels][int(rng.integers(len(self.labels) - k))]
            tgt, res, mode = np.zeros_like(mix), mix.copy(), "pos"
        meta = {"key": f"otf{self.seed}x{i}", "sample_rate": self.sr, "query_mode": mode, "positive_text": pos,
                "negative_text": ", ".join(labels[1:]), "positive_labels": [pos], "negative_labels": labels[1:],
                "target_labels": [] if silent else [labels[0]], "residual_labels": labels if silent else labels[1:],
                "silent_target": silent}
        return {"__key__": meta["key"], "mix": mix.astype(np.float32), "target": tgt.astype(np.float32),
                "residual": res.astype(np.float32), "json": meta}


def _train_source(corpus: Path, seconds: float, seed: int) -> list[tuple[OnTheFlyMixtures, float]]:
    """Built inside each training worker (the clip pool is too large to ship to Ray workers)."""
    return [(OnTheFlyMixtures(load_sources(corpus, 16000)["train"], 16000, seconds, seed=seed), 1.0)]


def _val_set(corpus: Path, seconds: float, seed: int) -> list[dict[str, Any]]:
    sources = load_sources(corpus, 16000)
    return list(OnTheFlyMixtures(sources.get("val", sources["train"]), 16000, seconds, seed=1000 + seed, n=48, silent_every=4))


def quality_arm(name: str, sources: dict, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import shutil
    from functools import partial

    from engine.ray_train import FitSpec, run_spec
    from models.separator.config import SeparatorConfig
    from models.separator.evaluate import TestItem, evaluate, format_table
    from models.separator.infer import Separator

    remedy = name == "remedy"
    steps = args.steps if name != "baseline" or args.baseline_steps is None else args.baseline_steps
    cfg = SeparatorConfig(presence_gate=remedy, silence_aug_prob=0.2 if remedy else 0.05, segment_s=args.segment,
                          max_steps=steps, steps_per_epoch=args.steps_per_epoch, threads=args.threads,
                          gru_stride=args.gru_stride, gru_layers=args.gru_layers, width=args.width, n_fft=args.n_fft, hop=args.hop,
                          batch_size=args.batch, lr=args.lr, plateau_patience=3, lr_schedule=args.lr_schedule, device=args.device, seed=args.seed)
    shutil.rmtree(out / name, ignore_errors=True)  # every arm trains from scratch
    spec = FitSpec(separator=cfg, streams=partial(_train_source, args.corpus, args.segment, args.seed),
                   val=partial(_val_set, args.corpus, args.segment, args.seed), out_dir=str(out / name))
    t0 = time.time()
    if args.workers > 1:  # data parallel over Ray Train (gloo DDP on CPU): the global batch stays args.batch
        from engine.config import RayConfig
        from engine.ray_runtime import ray_session
        from engine.ray_train import fit_separator

        with ray_session(RayConfig(num_cpus=args.workers, dashboard_port=0)):
            res = fit_separator(spec, num_workers=args.workers)
    else:
        res = run_spec(spec)
    train_s = time.time() - t0
    test = list(OnTheFlyMixtures(sources.get("test", sources["train"]), 16000, 4.0, seed=2000 + args.seed, n=args.n_test))
    items = [TestItem(s["__key__"], s["mix"], s["target"], s["json"]["positive_text"], None, tuple(s["json"]["target_labels"]),
                      set(s["json"]["target_labels"] + s["json"]["residual_labels"]), False) for s in test]
    report: dict[str, Any] = {"arm": name, "train_seconds": round(train_s, 1), "epochs": res.epochs, "steps": res.steps,
                              "workers": args.workers, "steps_per_s": round(res.steps / max(train_s, 1e-9), 3),
                              "history_tail": res.history[-3:]}
    for thr in ([float(t) for t in args.gate_thresholds.split(",")] if remedy else [0.0]):
        sep = Separator.load(res.best, "cpu", gate_threshold=thr)
        rep = evaluate(sep, items, absent_queries=True, seed=args.seed)
        print(f"\n== {name} (gate threshold {thr}) ==\n{format_table(rep)}", flush=True)
        report[f"gate_{thr}"] = {"overall": rep["overall"], "absent_queries": rep["absent_queries"], "per_class": rep["per_class"]}
    return report


def speed(args: argparse.Namespace) -> dict[str, Any]:
    from models.separator.config import SeparatorConfig
    from models.separator.presets import build_model, model_hparams

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"threads": args.threads}
    model = build_model("tiny", model_hparams(SeparatorConfig(), 256)).eval()
    out["tiny_params"] = sum(p.numel() for p in model.parameters())
    seg = 4.0
    for batch in (16, 1):
        mix = torch.randn(batch, int(seg * 16000)) * 0.1
        q = torch.randn(batch, 256)
        with torch.inference_mode():
            model(mix, q, q)
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 5.0:
                model(mix, q, q)
                reps += 1
        dt = (time.perf_counter() - t0) / reps
        out[f"tiny_batch{batch}_xrt"] = round(batch * seg / dt, 1)
        print(f"tiny batch {batch}: {batch * seg / dt:.0f}x real time ({dt * 1000:.0f} ms per call)", flush=True)
    if not args.skip_clapsep:
        cfg = SeparatorConfig(preset="clapsep", sample_rate=32000, n_fft=1024, hop=320)
        clap = build_model("clapsep", model_hparams(cfg, 512)).eval()
        out["clapsep_params"] = sum(p.numel() for p in clap.parameters())
        out["clapsep_trainable"] = sum(p.numel() for p in clap.parameters() if p.requires_grad)
        mix = torch.randn(1, 320000) * 0.1
        q = torch.randn(1, 512)
        with torch.inference_mode():
            clap(mix, q, q)
            t0 = time.perf_counter()
            for _ in range(3):
                clap(mix, q, q)
        out["clapsep_s_per_10s_clip"] = round((time.perf_counter() - t0) / 3, 3)
        print(f"clapsep full size: {out['clapsep_s_per_10s_clip']:.2f} s per 10 s clip "
              f"({out['clapsep_params'] / 1e6:.1f} M params, {out['clapsep_trainable'] / 1e6:.2f} M trainable)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="demo corpus dir (stemforge corpus demo --out DIR)")
    ap.add_argument("--steps", type=int, default=2950, help="optimiser steps per arm (2950: what the 10-minute wall-clock "
                    "budget of the documented runs reached with both cores, docs/perf/separator.md)")
    ap.add_argument("--arms", default="remedy,baseline")
    ap.add_argument("--baseline-steps", type=int, default=None, help="budget of the baseline arm (default: --steps)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/separator"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers (DDP ranks, one core each; 1 = in-process). "
                    "2 = both cores of the reference machine, as the documented runs' grad_threads 2")
    ap.add_argument("--gate-thresholds", default="0.5,0.3,0.0", help="remedy arm: evaluate at these presence-gate thresholds")
    ap.add_argument("--n-fft", type=int, default=512, help="separator.n_fft (tiny)")
    ap.add_argument("--hop", type=int, default=256, help="separator.hop (tiny)")
    ap.add_argument("--gru-layers", type=int, default=1, help="separator.gru_layers (tiny)")
    ap.add_argument("--gru-stride", type=int, default=2, help="separator.gru_stride (tiny)")
    ap.add_argument("--width", type=int, default=256, help="separator.width (tiny)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--segment", type=float, default=2.0, help="training crop seconds")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-schedule", choices=["plateau", "cosine"], default="cosine")
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=1024,
                    help="held-out test mixtures (the mean SI-SDRi is heavy-tailed: 96 moved it by ~1 dB between draws)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-clapsep", action="store_true")
    args = ap.parse_args()
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_speed:
        results["speed"] = speed(args)
    if not args.speed_only:
        if args.corpus is None:
            raise SystemExit("--corpus DIR is required for the quality benchmark")
        torch.set_num_threads(args.threads)
        sources = load_sources(args.corpus, 16000)
        results["classes"] = sorted(sources["train"])
        for arm in [a for a in args.arms.split(",") if a]:
            results[arm] = quality_arm(arm, sources, args, args.out)
            (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    results["load_avg_end"] = os.getloadavg()
    from storage.atomic import atomic_write_text

    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v for k, v in results.items() if k in ("speed", "load_avg_start", "load_avg_end")}, default=str))


if __name__ == "__main__":
    main()
