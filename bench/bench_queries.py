"""Queries in the user's words: silent share and SDRi per query form, old vs new training forms, with and without
the inference-side canonical query.

    .venv/bin/python bench/bench_queries.py --out bench_out/queries [--steps 400] [--scenes 40]

Data, all through the project's own code: a small demo corpus (`pipelines.corpus.demo.generate_demo`, all 16
classes), PromptSep tuples mixed from its *train* sources by the demo's mixing config (`MixSampleFactory`) into a
shard store, and the corpus' held-out natural *test* scenes with their audit stems (`engine.evaluation.natural_items`)
as the measurement. Two `tiny` separators are trained with the same config, data, seed and step budget:

- `old`: every query asked as stored (the label phrase, `query_forms=False`), the behaviour before issue 13;
- `new`: each label-derived query side drawn from the written forms of `models.labels.query_form`.

Each is evaluated on every present target of the test scenes, positive-only (what `stemforge separate --query X`
asks), once per query form: the training phrase, bare label variants, the AudioSet display name, and the held-out
templates / case forms that training never draws (`models.labels.held_out_forms`); with the Separator's canonical
query on (the shipped behaviour) and off (raw text to the encoder, which isolates what the training forms buy).
Per form: the share of silent outputs for present targets (the presence gate closed or the estimate >= 60 dB below
the mixture), mean SDRi, and, for one absent class per item asked in the same form, the share that came back silent
(the gate must still close for absent classes). Results: OUT/results.json and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SR = 16000


def build_data(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Demo corpus + train/val tuple shard stores (skipped when already there)."""
    from engine.run_config import load
    from pipelines.corpus.config import DemoConfig
    from pipelines.corpus.demo import generate_demo
    from pipelines.mixing.job import MixSampleFactory
    from storage.shards import ShardConfig, write_store

    corpus = out / "corpus"
    if not (corpus / "manifests" / "audit").is_dir():
        generate_demo(corpus, DemoConfig(source_seconds=3.0, scene_seconds=4.0, event_seconds=(1.5, 3.0),
                                         events_per_scene=(2, 3), workers=1,
                                         sources_per_class={"train": args.sources, "val": 1, "test": 2},
                                         scenes={"train": 1, "val": 1, "test": args.scenes}),
                      seed=args.seed, sample_rate=SR)
    cfg = load(None, [])
    stores = {}
    for split, num in (("train", args.tuples), ("val", 24)):
        mcfg = cfg.mixing.model_copy(update={"split": split, "duration_s": args.segment})
        d = out / "tuples" / split
        write_store(d, MixSampleFactory(mcfg, args.seed + (0 if split == "train" else 1000),
                                        str(corpus / "manifests" / "sources"), audio_cfg=cfg.audio),
                    num, ShardConfig(max_count=256, fsync=False, prefix=f"q-{split}"))
        stores[split] = d
    return {"corpus": corpus, **stores}


def train_arm(name: str, data: dict[str, Any], out: Path, args: argparse.Namespace) -> tuple[Path, float]:
    import shutil

    from models.separator.config import SeparatorConfig
    from models.separator.data import ShardSource, read_samples
    from models.separator.train import train_separator

    forms = {"query_forms": name == "new"}  # old: the stored phrase only; new: the drawn written forms
    cfg = SeparatorConfig(width=args.width, segment_s=args.segment, batch_size=args.batch, max_steps=args.steps,
                          steps_per_epoch=max(1, args.steps // 4), lr=2e-3, lr_schedule="cosine", threads=args.threads,
                          device="cpu", seed=args.seed, **forms)
    run = out / f"sep_{name}"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.time()
    res = train_separator(cfg, [(ShardSource([data["train"]], SR), 1.0)], read_samples([data["val"]], SR), run)
    return res.best, time.time() - t0


def forms_of(label: str) -> dict[str, str]:
    """Query forms per kind for one label; kinds in `HELD_OUT` are never drawn in training."""
    from models.labels import audioset_name, display, held_out_forms, phrase_for, slug

    s = slug(label)
    out = {"phrase (old training form)": phrase_for(s), "bare label": display(s), "BARE LABEL (upper)": display(s).upper(),
           "Bare_Label (title, _)": "_".join(w.capitalize() for w in s.split("_"))}
    name = audioset_name(s)
    if name:
        out["AudioSet display name"] = name
    out.update(held_out_forms(s))
    return out


HELD_OUT = "held_out_"


def measure(sep: Any, items: list[Any], form_kind: str, seed: int) -> dict[str, Any]:
    """Present targets and one absent class per item, all positive-only and worded in `form_kind`."""
    from models.separator.evaluate import TestItem, evaluate, is_silent

    def worded(label: str) -> str | None:
        return forms_of(label).get(form_kind)

    asked = [TestItem(it.key, it.mix, it.target, worded(it.classes[0]), None, it.classes, it.present, False)
             for it in items if worded(it.classes[0]) is not None]
    if not asked:
        return {}
    rep = evaluate(sep, asked, absent_queries=False, seed=seed)
    # absent classes in the same form: the gate should close (silent output) for them
    vocab = sorted({c for it in items for c in it.present})
    rng = np.random.default_rng(seed)
    absent_q = []
    for it in asked:
        pool = [v for v in vocab if v not in it.present and worded(v) is not None]
        if pool:
            absent_q.append((it.mix, worded(pool[int(rng.integers(len(pool)))])))
    silent_absent = []
    for i in range(0, len(absent_q), 16):
        chunk = absent_q[i:i + 16]
        est = sep.separate([m for m, _ in chunk], SR, [q for _, q in chunk])
        silent_absent += [is_silent(e, m) for e, (m, _) in zip(est, chunk)]
    o = rep["overall"]
    return {"n": o["n"], "silent_share": o["silent_share"], "sdri": o["sdri"],
            "absent_silent_share": float(np.mean(silent_absent)) if silent_absent else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/queries"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--tuples", type=int, default=600)
    ap.add_argument("--sources", type=int, default=6, help="train source clips per class")
    ap.add_argument("--scenes", type=int, default=40, help="held-out natural test scenes")
    ap.add_argument("--segment", type=float, default=2.0)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from engine.evaluation import natural_items
    from models.separator.infer import Separator

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = build_data(args.out, args)
    items = list(natural_items(str(data["corpus"] / "manifests" / "scenes"), str(data["corpus"] / "manifests" / "audit"),
                               "test", SR))
    kinds = list(dict.fromkeys(k for it in items for k in forms_of(it.classes[0])))
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "items": len(items),
                               "data_seconds": round(time.time() - t0, 1), "arms": {}}
    for arm in ("old", "new"):
        ckpt, secs = train_arm(arm, data, args.out, args)
        arm_res: dict[str, Any] = {"train_seconds": round(secs, 1)}
        for canonical in (False, True):
            sep = Separator.load(ckpt, "cpu")
            sep.normalize_queries = canonical
            arm_res["canonical" if canonical else "raw"] = {k: measure(sep, items, k, args.seed) for k in kinds}
        results["arms"][arm] = arm_res
        print(f"{arm}: trained {args.steps} steps in {secs:.0f} s", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results, kinds))


def _pooled(rows: dict[str, dict[str, Any]], pick: Callable[[str], bool], key: str) -> float:
    num = sum(r[key] * r["n"] for k, r in rows.items() if r and pick(k))
    den = sum(r["n"] for k, r in rows.items() if r and pick(k))
    return num / den if den else float("nan")


def table(results: dict[str, Any], kinds: list[str]) -> str:
    lines = [f"present targets: {results['items']} (held-out natural test scenes); silent = gate closed or >= 60 dB "
             f"below the mixture; absent = one absent class per item in the same form (want silent)"]
    head = f"{'query form':<34}" + "".join(f"{a + '/' + m:>26}" for a in ("old", "new") for m in ("raw", "canonical"))
    lines += [head, " " * 34 + "".join(f"{'silent%   SDRi abs-sil%':>26}" for _ in range(4))]
    arms = results["arms"]

    def cell(r: dict[str, Any]) -> str:
        return f"{100 * r['silent_share']:>8.1f}{r['sdri']:>7.2f}{100 * r['absent_silent_share']:>9.1f}  " if r else f"{'-':>26}"

    for k in kinds:
        lines.append(f"{k[:33]:<34}" + "".join(cell(arms[a][m].get(k, {})) for a in ("old", "new") for m in ("raw", "canonical")))
    for name, pick in (("ALL HELD-OUT FORMS", lambda k: k.startswith(HELD_OUT)),
                       ("ALL BARE-LABEL FORMS", lambda k: "label" in k.lower() and not k.startswith(HELD_OUT))):
        vals = []
        for a in ("old", "new"):
            for m in ("raw", "canonical"):
                rows = arms[a][m]
                vals.append({"silent_share": _pooled(rows, pick, "silent_share"), "sdri": _pooled(rows, pick, "sdri"),
                             "absent_silent_share": _pooled(rows, pick, "absent_silent_share"), "n": 1})
        lines.append(f"{name:<34}" + "".join(cell(v) for v in vals))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
