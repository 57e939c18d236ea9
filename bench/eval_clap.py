"""Train the mini CLAP on the demo corpus and report what the SAM Audio CLAP filter needs from it.

Reports (held-out test split, never seen in training):
- zero-shot class top-1: each test clip against one text per class (phrase, label name, caption template);
- text-target vs text-residual cosine distributions for filter-style pairs built from test clips: target = one
  class (or a 2-class mixture with the joined phrases as text), residual = other classes; the filter keeps a
  tuple when CLAP(text, target) > 0.35 and CLAP(text, residual) < 0.0;
- the same on the natural-style test scenes' audit stems (reverberant events over ambience): target = the event
  stem, residual = scene minus stem.

Usage: .venv/bin/python bench/eval_clap.py [--corpus DIR] [--steps N] [--out CKPT] [--json FILE]
Without --corpus the demo corpus is generated (seeded) into runs/bench/demo_corpus first.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.clap.config import MiniClapTrainConfig  # noqa: E402
from models.clap.mini import MiniClap  # noqa: E402
from models.clap.train_mini import Clip, load_clips, train_mini_clap, zero_shot_top1  # noqa: E402
from pipelines.mixing.prompts import phrase_for, query_text  # noqa: E402
from storage.audio import AudioConfig, load_audio  # noqa: E402
from storage.manifests import iter_rows  # noqa: E402

THRESH_TARGET, THRESH_RESIDUAL = 0.35, 0.0


def ensure_corpus(corpus: Path | None, seed: int) -> Path:
    if corpus is not None:
        return corpus
    corpus = REPO / "runs" / "bench" / "demo_corpus"
    if not (corpus / "corpus.json").exists():
        from engine.run_config import load
        from pipelines.corpus.demo import generate_demo

        cfg = load()
        print(f"generating demo corpus into {corpus} ...", file=sys.stderr)
        generate_demo(corpus, cfg.corpus.demo, seed=seed, sample_rate=cfg.audio.sample_rate)
    return corpus


def cos(model: MiniClap, texts: list[str], audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        t = model.encode_text(texts)
        out = []
        for s in range(0, len(audio), 32):
            out.append(model.encode_audio(torch.from_numpy(np.ascontiguousarray(audio[s:s + 32], dtype=np.float32))))
        return (t * torch.cat(out)).sum(dim=1).numpy()


def dist(x: np.ndarray, above: float | None = None, below: float | None = None) -> dict[str, float]:
    d = {"n": int(len(x)), "p05": float(np.percentile(x, 5)), "p25": float(np.percentile(x, 25)), "median": float(np.median(x)),
         "p75": float(np.percentile(x, 75)), "p95": float(np.percentile(x, 95))}
    if above is not None:
        d[f"frac_gt_{above}"] = float((x > above).mean())
    if below is not None:
        d[f"frac_lt_{below}"] = float((x < below).mean())
    return d


def filter_pairs(model: MiniClap, test: list[Clip], rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Filter-style (text, target, residual) triples from held-out clips."""
    by_class: dict[str, list[Clip]] = {}
    for c in test:
        by_class.setdefault(c.label, []).append(c)
    classes = sorted(by_class)
    n = min(len(c.audio) for c in test)
    texts, targets, residuals, mtexts, mtargets, mresiduals = [], [], [], [], [], []
    for c in test:
        others = [k for k in classes if k != c.label]
        picks = rng.choice(len(others), size=2, replace=False)
        res = sum(by_class[others[i]][int(rng.integers(len(by_class[others[i]])))].audio[:n] for i in picks)
        texts.append(phrase_for(c.label))
        targets.append(c.audio[:n])
        residuals.append(res)
        # two-source target (text names both), residual = a third class
        b, r = others[picks[0]], others[picks[1]]
        mtexts.append(query_text([c.label, b]) or "")
        mtargets.append(c.audio[:n] + by_class[b][int(rng.integers(len(by_class[b])))].audio[:n])
        mresiduals.append(by_class[r][int(rng.integers(len(by_class[r])))].audio[:n])
    tt = cos(model, texts, np.stack(targets))
    tr = cos(model, texts, np.stack(residuals))
    mt = cos(model, mtexts, np.stack(mtargets))
    mr = cos(model, mtexts, np.stack(mresiduals))
    both = lambda a, b: float(((a > THRESH_TARGET) & (b < THRESH_RESIDUAL)).mean())  # noqa: E731
    return {"single_target": dist(tt, above=THRESH_TARGET), "single_residual": dist(tr, below=THRESH_RESIDUAL),
            "two_source_target": dist(mt, above=THRESH_TARGET), "two_source_residual": dist(mr, below=THRESH_RESIDUAL),
            "kept_by_filter": {"single": both(tt, tr), "two_source": both(mt, mr)}}


def audit_pairs(model: MiniClap, corpus: Path, sample_rate: int) -> dict[str, dict[str, float]] | None:
    """Natural-style test scenes: event stem vs scene minus stem."""
    scenes_dir, audit_dir = corpus / "manifests" / "scenes", corpus / "manifests" / "audit"
    if not scenes_dir.is_dir() or not audit_dir.is_dir():
        return None
    acfg = AudioConfig(sample_rate=sample_rate, allow_silent=True)
    test_scenes = {r["clip_id"]: r["path"] for r in iter_rows(scenes_dir, columns=["clip_id", "path", "split"]) if r["split"] == "test"}
    rows = [r for r in iter_rows(audit_dir, columns=["scene_id", "label", "path"]) if r["scene_id"] in test_scenes]
    labels_in: dict[str, list[str]] = {}
    for r in rows:
        labels_in.setdefault(r["scene_id"], []).append(r["label"])
    tt, tr = [], []
    for row in rows:
        if row["label"] == "background" or labels_in[row["scene_id"]].count(row["label"]) > 1:
            continue  # a label occurring twice in a scene has no clean residual
        scene = load_audio(test_scenes[row["scene_id"]], acfg)
        stem = load_audio(row["path"], acfg)
        n = min(len(scene), len(stem))
        text = [phrase_for(row["label"])]
        tt.append(float(cos(model, text, stem[None, :n])[0]))
        tr.append(float(cos(model, text, (scene[:n] - stem[:n])[None])[0]))
    if not tt:
        return None
    a, b = np.array(tt), np.array(tr)
    return {"stem_target": dist(a, above=THRESH_TARGET), "scene_minus_stem_residual": dist(b, below=THRESH_RESIDUAL),
            "kept_by_filter": {"audit": float(((a > THRESH_TARGET) & (b < THRESH_RESIDUAL)).mean())}}


def markdown(r: dict) -> str:
    lines = [f"Mini CLAP on the demo corpus ({r['train_clips']} train clips, {r['classes']} classes, {r['steps']} steps, "
             f"trained in {r['train_seconds']:.0f} s wall / {r['train_cpu_seconds']:.0f} s CPU, torch threads=1, shared 2-core machine).", "",
             "| held-out zero-shot top-1 | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["zero_shot_top1"].items()]
    lines += ["", "| pairs (held-out) | n | p05 | p25 | median | p75 | p95 | share passing |", "|---|---|---|---|---|---|---|---|"]
    for group in ("filter_pairs", "audit_pairs"):
        for name, d in (r.get(group) or {}).items():
            if name == "kept_by_filter":
                continue
            frac = next((f"{k.replace('frac_', '')}: {v:.3f}" for k, v in d.items() if k.startswith("frac_")), "")
            lines.append(f"| {name} | {d['n']} | {d['p05']:.2f} | {d['p25']:.2f} | {d['median']:.2f} | {d['p75']:.2f} | {d['p95']:.2f} | {frac} |")
    kept = {**r["filter_pairs"]["kept_by_filter"], **((r.get("audit_pairs") or {}).get("kept_by_filter") or {})}
    lines += ["", "Share of matching tuples kept by both CLAP rules (> 0.35 and < 0.0): " + ", ".join(f"{k} {v:.3f}" for k, v in kept.items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "clap_mini.pt")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    corpus = ensure_corpus(args.corpus, args.seed)
    cfg = MiniClapTrainConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    sources = corpus / "manifests" / "sources"
    train, _ = load_clips(sources, cfg.sample_rate, ("train",))
    test, _ = load_clips(sources, cfg.sample_rate, ("test",))
    phrases = {c.label: phrase_for(c.label) for c in train}
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = train_mini_clap(train, phrases, cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    model = result.model
    model.save(args.out, {"classes": result.classes, "phrases": phrases, "steps": cfg.steps})
    test = [c for c in test if c.label in phrases]
    rng = np.random.default_rng(args.seed + 1)
    r = {"train_clips": len(train), "test_clips": len(test), "classes": len(result.classes), "steps": cfg.steps,
         "train_seconds": wall, "train_cpu_seconds": cpu, "checkpoint": str(args.out),
         "zero_shot_top1": {
             "phrase ('a dog barking')": zero_shot_top1(model, test, phrases),
             "label name ('dog')": zero_shot_top1(model, test, {k: k for k in phrases}),
             "caption ('the sound of a dog barking nearby')": zero_shot_top1(model, test, {k: f"the sound of {v} nearby" for k, v in phrases.items()}),
         },
         "filter_pairs": filter_pairs(model, test, rng),
         "audit_pairs": audit_pairs(model, corpus, cfg.sample_rate)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2))
    print(markdown(r))


if __name__ == "__main__":
    main()
