"""PROXY ratings from the run's own separator: calibrate the mini judge on the errors the separator really makes.

Why: `proxy_ratings.degrade` rates hand-made degradations (cut segments, EQ, added residual), which are not the
errors a mask-based separator makes (partial suppression, smeared leakage, musical noise), and the judge trained
only on them barely tracks true track SDR on natural candidates. Here the outputs are the separator's own, on
synthetic tuples it was not trained on (the `val` store), where target and residual are known exactly, so each
output gets ratings computed from the truth. This is still a PROXY for SAJ's human ratings (the human path is
`models/judge/human_ratings.py`): the axes measure signal properties, not what listeners say.

Mapping (`ratings_from_truth`; every axis clipped to [1, 5]). The estimate e is decomposed frame by frame
(`FRAME_S` = 32 ms, no overlap) by least squares on the frame's target t_f and residual r_f:
e_f = a_f t_f + b_f r_f + art_f, so
  E_tgt  = sum a_f^2 |t_f|^2   (target energy in the estimate)
  E_leak = sum b_f^2 |r_f|^2   (residual energy leaked into the estimate)
  E_art  = sum |art_f|^2       (what neither explains: distortion, artefacts)
  g      = RMS of a_f over the frames where a_f > 0.05 (the estimate's level where the target came through), so a
           uniformly quieter target is a level error (faithfulness) and missing parts are a recall error
| axis         | measured quantity                                                  | 1 ...................... 5        |
| ------------ | ------------------------------------------------------------------ | --------------------------------- |
| recall       | kept = sum |t_f|^2 clip(a_f / g, 0, 1)^2 / |t|^2 (target energy recovered, level removed) | 1 + 4 kept^1.5 (as proxy_ratings) |
| precision    | L = 10 log10(E_leak / E_tgt) dB                                    | L >= 0 dB ... L <= -25 dB         |
| faithfulness | A = 10 log10(E_tgt / E_art) dB, minus |20 log10 g| / 3 (level error, as proxy_ratings) | A <= 0 ... A >= 20 dB |
| overall      | SDR = 10 log10(|t|^2 / |t - e|^2) (plain SDR, as `true_sdr_db`)     | SDR <= -10 dB ... SDR >= 15 dB    |
Edge cases: no leakage at all (E_leak ~ 0, e.g. silence) is precision 5; nothing of the target left (kept < 0.05)
is faithfulness 1; a silent target has no ratings (`ValueError`; such tuples are skipped). Overall follows SDR alone,
so a silent estimate rates as SDR 0 dB does (2.6): the same number the run's audit gives it.

Estimates per tuple (`separator_examples`), so the ratings span 1..5: the separator asked as the tuple asks, the
positive side alone in a drawn written form, the mixture at another input gain, a wrong-class query (a residual
label; the judge still sees the target's text), an absent-class query, a blend of the separator's estimate with the
mixture, the mixture itself and silence.

Which items: any with known truth. The synthetic `val` store is held out from the separator's training; a capped
number of `train` tuples widens the set (at demo scale the separator's outputs on them rate like val's: mean
overall 3.37 vs 3.39 for the asked query), and `calibrate_judge(extra_samples=)` takes natural scenes with audit
stems (the run's natural val split), closer to the candidates the filter scores (8 s reverberant scenes).
What the judge reads: each example's text is the target's plus the other labels of its mixture
(`models.judge.prompt.judge_text`), and the checkpoint says so (`meta.text_form`), so the scorer composes the same
form from what the filter knows of a candidate's scene.
Measured on the demo (bench/eval_judge_gate.py, docs/perf/judge_pc.md): the calibrated judge tracks SDR on held-out
tuples far better than the degradation-trained one; on natural candidates it reached r = 0.46 with true track SDR
reading the target alone (every synthetic tuple of the run; 0.33 on a quarter of them) and 0.61 reading the other
labels too, with 4000 steps on 4-s crops (the engine's defaults).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from models.judge.config import JudgeConfig
from models.judge.model import AXES
from models.judge.prompt import WITH_OTHERS, judge_text

log = logging.getLogger("stemforge.judge")
FRAME_S = 0.032
SDR_LO, SDR_HI = -10.0, 15.0
LEAK_LO, LEAK_HI = -25.0, 0.0
ART_LO, ART_HI = 0.0, 20.0
TARGETS = "separator-proxy"  # recorded in the checkpoint meta: what the ratings are (not human)
KINDS = ("asked", "pos_form", "gain", "wrong_class", "absent_class", "blend", "mixture", "silence")


def _scale(x: float, lo: float, hi: float) -> float:
    """1 at `lo`, 5 at `hi` (either order), clipped."""
    return float(1.0 + 4.0 * np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def _frames(x: np.ndarray, n: int) -> np.ndarray:
    pad = (-len(x)) % n
    return np.pad(np.asarray(x, dtype=np.float64), (0, pad)).reshape(-1, n)


def decompose(estimate: np.ndarray, target: np.ndarray, residual: np.ndarray, sr: int) -> dict[str, float]:
    """Frame-wise least-squares split of the estimate into target, leaked residual and artefact (module docstring)."""
    e, t, r = (np.asarray(a, dtype=np.float64) for a in (estimate, target, residual))
    if not (e.ndim == t.ndim == r.ndim == 1 and len(e) == len(t) == len(r)):
        raise ValueError(f"estimate/target/residual must be mono and the same length, got {e.shape}, {t.shape}, {r.shape}")
    n = max(1, int(round(FRAME_S * sr)))
    E, T, R = _frames(e, n), _frames(t, n), _frames(r, n)
    tt, rr, tr = (T * T).sum(1), (R * R).sum(1), (T * R).sum(1)
    et, er = (E * T).sum(1), (E * R).sum(1)
    ridge = 1e-9 * (tt + rr) + 1e-20
    g11, g22 = tt + ridge, rr + ridge
    det = g11 * g22 - tr * tr
    a = (g22 * et - tr * er) / det
    b = (g11 * er - tr * et) / det
    a = np.where(tt > 1e-18, a, 0.0)  # a frame without target (or residual) has no coefficient for it
    b = np.where(rr > 1e-18, b, 0.0)
    art = E - a[:, None] * T - b[:, None] * R
    t_energy = float(tt.sum())
    on = a > 0.05  # frames where some target came through: their level is the estimate's gain, the rest is missing
    gain = float(np.sqrt((a[on] ** 2 * tt[on]).sum() / max(float(tt[on].sum()), 1e-30))) if on.any() else 0.0
    rel = np.clip(a / gain, 0.0, 1.0) if gain > 0 else np.zeros_like(a)
    return {"target_energy": t_energy, "e_tgt": float((a * a * tt).sum()), "e_leak": float((b * b * rr).sum()),
            "e_art": float((art * art).sum()), "estimate_energy": float((E * E).sum()), "gain": gain,
            "kept": float((tt * rel ** 2).sum() / max(t_energy, 1e-30))}


def ratings_from_truth(estimate: np.ndarray, target: np.ndarray, residual: np.ndarray, sr: int) -> dict[str, float]:
    """The documented PROXY mapping (module docstring): 1-5 per axis of AXES from the known target and residual."""
    d = decompose(estimate, target, residual, sr)
    t_e = d["target_energy"]
    if t_e <= 1e-12:
        raise ValueError("target is silent: separator-proxy ratings need a present target")
    floor = 1e-9 * t_e
    recall = 1.0 + 4.0 * float(np.clip(d["kept"], 0.0, 1.0)) ** 1.5
    if d["e_leak"] <= floor:
        precision = 5.0
    else:
        precision = _scale(10 * np.log10(d["e_leak"] / max(d["e_tgt"], floor)), LEAK_HI, LEAK_LO)
    if d["kept"] < 0.05:
        faith = 1.0
    else:
        sar = 10 * np.log10(max(d["e_tgt"], floor) / max(d["e_art"], floor))
        gain_db = abs(20 * np.log10(max(d["gain"], 1e-6)))
        faith = float(np.clip(_scale(sar, ART_LO, ART_HI) - gain_db / 3.0, 1.0, 5.0))
    err = float(np.sum((np.asarray(target, np.float64) - np.asarray(estimate, np.float64)) ** 2))
    sdr = 10 * np.log10((t_e + 1e-8) / (err + 1e-8))  # models.metrics.sdr's clamp, without a torch round trip
    return {"overall": _scale(sdr, SDR_LO, SDR_HI), "recall": recall, "precision": precision, "faithfulness": faith}


@dataclass
class RatedExample:
    """One (mixture, estimate, text) with the truth its ratings are computed from (on whatever crop is used)."""

    key: str
    kind: str
    mix: np.ndarray
    estimate: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    text: str


def target_text(meta: dict[str, Any]) -> str:
    """What the judge is asked about: the tuple's positive text, else its target labels' phrases (a `neg`-mode
    tuple has no positive side), the form the filters score natural candidates with (`positive_text`)."""
    from models.labels import phrase_for

    text = meta.get("positive_text")
    if text:
        return str(text)
    labels = [str(x) for x in (meta.get("target_labels") or meta.get("positive_labels") or []) if x]
    return ", ".join(phrase_for(x) for x in labels)


def other_labels(meta: dict[str, Any]) -> list[str]:
    """The other sounds known to be in the item's mixture (what a `target+others` judge reads beside the target):
    a tuple's residual labels, else its negative labels."""
    return [str(x) for x in (meta.get("residual_labels") or meta.get("negative_labels") or []) if x]


def _present(meta: dict[str, Any]) -> set[str]:
    from models.labels import slug

    return {slug(x) for k in ("target_labels", "residual_labels", "positive_labels", "negative_labels")
            for x in (meta.get(k) or []) if x}


def separator_examples(sep: Any, samples: Sequence[dict[str, Any]], seed: int, vocabulary: Sequence[str] = (),
                       batch: int = 16) -> list[RatedExample]:
    """Every estimate kind of KINDS for each sample with a present target (module docstring), all draws from `seed`.

    `sep` is a loaded `models.separator.infer.Separator`; samples are shard-reader dicts at `sep.sample_rate`."""
    from models.labels import phrase_for, query_form_text, slug
    from models.separator.data import query_texts

    rng = np.random.default_rng(seed)
    sr = sep.sample_rate
    vocab = sorted({str(v) for v in vocabulary})
    jobs: list[tuple[int, str, float, str | None, str | None]] = []  # sample index, kind, gain, pos, neg
    out: list[RatedExample] = []
    usable = []
    for i, s in enumerate(samples):
        meta = s["json"]
        if meta.get("silent_target") or float(np.sum(np.square(s["target"], dtype=np.float64))) <= 1e-12:
            continue
        usable.append(i)
        pos, neg, _ = query_texts(meta)
        tlabels = [str(x) for x in (meta.get("target_labels") or meta.get("positive_labels") or []) if x]
        rlabels = [str(x) for x in (meta.get("residual_labels") or []) if x]
        jobs.append((i, "asked", 0.0, pos, neg))
        jobs.append((i, "pos_form", 0.0, query_form_text(tlabels, rng) or target_text(meta), None))
        jobs.append((i, "gain", float(rng.choice([-12.0, -6.0, 6.0])), pos, neg))
        if rlabels:
            wrong = rlabels[int(rng.integers(len(rlabels)))]
            jobs.append((i, "wrong_class", 0.0, phrase_for(wrong), ", ".join(phrase_for(x) for x in tlabels) or None))
        absent = [v for v in vocab if slug(v) not in _present(meta)]
        if absent:
            jobs.append((i, "absent_class", 0.0, phrase_for(absent[int(rng.integers(len(absent)))]), None))
    estimates: dict[tuple[int, str], np.ndarray] = {}
    for j in range(0, len(jobs), batch):
        chunk = jobs[j:j + batch]
        gains = [np.float32(10 ** (g / 20)) for _, _, g, _, _ in chunk]
        mixes = [samples[i]["mix"] * g for (i, *_), g in zip(chunk, gains)]
        est = sep.separate(mixes, sr, [c[3] for c in chunk], [c[4] for c in chunk])
        for (i, kind, *_), g, e in zip(chunk, gains, est):
            estimates[(i, kind)] = (np.asarray(e, np.float32) / g).astype(np.float32)
    for i in usable:
        s = samples[i]
        meta, mix = s["json"], np.asarray(s["mix"], np.float32)
        text = judge_text(target_text(meta), other_labels(meta))
        lam = float(rng.uniform(0.2, 0.8))
        made = {k: v for (ii, k), v in estimates.items() if ii == i}
        made["blend"] = ((1 - lam) * made["asked"] + lam * mix).astype(np.float32)
        made["mixture"] = mix.copy()
        made["silence"] = np.zeros_like(mix)
        for kind in KINDS:
            if kind in made:
                out.append(RatedExample(str(s["__key__"]), kind, mix, made[kind],
                                        np.asarray(s["target"], np.float32), np.asarray(s["residual"], np.float32), text))
    return out


def _crop(ex: RatedExample, rng: np.random.Generator, n: int | None) -> tuple[np.ndarray, ...]:
    arrays = (ex.mix, ex.estimate, ex.target, ex.residual)
    if n is None or len(ex.mix) <= n:
        return tuple(np.pad(a, (0, max(0, (n or 0) - len(a)))) for a in arrays)
    s = int(rng.integers(0, len(ex.mix) - n + 1))
    return tuple(a[s:s + n] for a in arrays)


def rating_batch(examples: Sequence[RatedExample], rng: np.random.Generator, size: int, sr: int,
                 clip_s: float | None) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """`size` random examples, each cropped to `clip_s` (None: whole) with ratings computed on that crop; a crop
    whose target is (nearly) silent is redrawn (its ratings would say nothing)."""
    n = None if clip_s is None else int(round(clip_s * sr))
    mixes, outs, texts, ys = [], [], [], []
    while len(mixes) < size:
        ex = examples[int(rng.integers(len(examples)))]
        m, e, t, r = _crop(ex, rng, n)
        if float(np.sum(np.square(t, dtype=np.float64))) <= 1e-6 * max(float(np.sum(np.square(m, dtype=np.float64))), 1e-12):
            continue
        y = ratings_from_truth(e, t, r, sr)
        mixes.append(m)
        outs.append(e)
        texts.append(ex.text)
        ys.append([y[a] for a in AXES])
    width = max(len(m) for m in mixes)  # whole examples of several lengths: right-pad, as the scorer does
    pad = lambda xs: np.stack([np.pad(x, (0, width - len(x))) for x in xs])  # noqa: E731
    return pad(mixes), pad(outs), texts, np.asarray(ys, dtype=np.float32)


def truth_table(examples: Sequence[RatedExample], sr: int) -> np.ndarray:
    """Whole-example ratings `[N, 4]` (ordered as AXES)."""
    return np.asarray([[r[a] for a in AXES] for r in (ratings_from_truth(x.estimate, x.target, x.residual, sr)
                                                      for x in examples)], dtype=np.float32)


def heldout_report(model: Any, examples: Sequence[RatedExample], sr: int, device: Any) -> dict[str, Any]:
    """PCC/SRCC per axis of the judge vs the truth ratings on whole examples, plus overall vs plain SDR."""
    from models.judge.train import correlations, predict

    if not examples:
        return {"n": 0}
    n = max(len(x.mix) for x in examples)
    pad = lambda a: np.pad(a, (0, n - len(a)))  # noqa: E731
    pred = predict(model, np.stack([pad(x.mix) for x in examples]), np.stack([pad(x.estimate) for x in examples]),
                   [x.text for x in examples], device)
    truth = truth_table(examples, sr)
    sdr = np.asarray([10 * np.log10((np.sum(x.target.astype(np.float64) ** 2) + 1e-8)
                                    / (np.sum((x.target.astype(np.float64) - x.estimate) ** 2) + 1e-8))
                      for x in examples])
    ok = np.std(pred[:, 0]) > 1e-9
    return {"n": len(examples), "axes": correlations(pred, truth),
            "overall_vs_sdr": {"pcc": float(stats.pearsonr(pred[:, 0], sdr)[0]) if ok else float("nan"),
                               "srcc": float(stats.spearmanr(pred[:, 0], sdr)[0]) if ok else float("nan")},
            "per_kind_mean_overall": {k: float(pred[[i for i, x in enumerate(examples) if x.kind == k], 0].mean())
                                      for k in KINDS if any(x.kind == k for x in examples)}}


def holdout_of(key: str, every: int = 5) -> bool:
    """Deterministic 1-in-`every` split of tuple keys for the held-out correlation."""
    return int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) % every == 0


def read_tuples(shard_dirs: Sequence[str | Path], sample_rate: int, limit: int | None = None) -> list[dict[str, Any]]:
    """Samples of shard stores at `sample_rate`, those with a present target only, at most `limit` per store (in
    store order, so the same stores give the same tuples)."""
    from models.separator.data import ShardSource

    out: list[dict[str, Any]] = []
    for d in shard_dirs:
        src = ShardSource([Path(d)], sample_rate)
        idx = [i for i, m in enumerate(src.metas()) if not m.get("silent_target")]
        out += [src[i] for i in (idx if limit is None else idx[:limit])]
    return out


def calibrate_judge(judge_ckpt: str, separator_ckpt: str, shard_dirs: list[str], cfg: JudgeConfig, steps: int,
                    seed: int, out: Path, heldout_dirs: Sequence[str] = (), max_tuples: int | None = None,
                    clip_s: float | None = None, extra_samples: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Fine-tune the judge at `judge_ckpt` for `steps` on separator-proxy ratings of `separator_ckpt`'s outputs for
    the tuples of `shard_dirs` (at most `max_tuples` per store; 1 in 5 tuples by key hash held out), write it to
    `out`; returns the checkpoint path, its hash and the held-out correlations (also on `heldout_dirs`, e.g. the
    synthetic test store, when given).

    `extra_samples`: more items with known truth in the shard-reader format (`{"__key__", "mix", "target",
    "residual", "json"}`), e.g. the natural validation scenes with their audit stems (residual = mix - target,
    json with positive/negative text and target/residual labels): trained on like the tuples, and held out alike.
    `clip_s`: training crop (default `cfg.clip_seconds`; 0 = whole items). Deterministic for a seed and inputs."""
    import torch

    from models.judge.checkpoint import load_model
    from models.judge.features import resolve_device
    from models.judge.train import FORMAT, MODEL_KEYS, VERSION, build_model, finetune_ratings, save_judge
    from models.separator.data import sample_vocabulary, shard_dir_hash
    from models.separator.infer import Separator

    t0 = time.time()
    torch.manual_seed(seed)
    model, payload = load_model(judge_ckpt, FORMAT, VERSION, MODEL_KEYS, build_model, "judge", "stemforge train judge")
    sr = int(payload["config"]["sample_rate"])
    device = resolve_device(cfg.device)
    sep = Separator.load(separator_ckpt, "cpu" if device.type == "cpu" else str(device))
    if sep.sample_rate != sr:
        raise ValueError(f"{separator_ckpt}: separator rate {sep.sample_rate} Hz != judge rate {sr} Hz ({judge_ckpt})")
    samples = read_tuples(shard_dirs, sr, max_tuples) + list(extra_samples)
    if not samples:
        raise ValueError(f"{list(shard_dirs)}: no tuple with a present target to calibrate the judge on")
    vocab = sample_vocabulary(samples)
    examples = separator_examples(sep, samples, seed, vocab)
    train = [x for x in examples if not holdout_of(x.key)] or examples
    held = [x for x in examples if holdout_of(x.key)]
    log.info("judge calibration: %d tuples -> %d examples (%d held out), %d steps", len(samples), len(examples),
             len(held), steps)
    run_cfg = cfg.model_copy(update={"seed": int(seed)})
    crop = cfg.clip_seconds if clip_s is None else (clip_s or None)
    history = finetune_ratings(model, lambda rng: rating_batch(train, rng, cfg.train_batch, sr, crop), steps,
                               run_cfg, device)
    report: dict[str, Any] = {"heldout": heldout_report(model, held, sr, device)}
    if heldout_dirs:
        test = read_tuples(heldout_dirs, sr, max_tuples)
        report["test"] = heldout_report(model, separator_examples(sep, test, seed + 1, sample_vocabulary(test)), sr, device)
    meta = {"targets": TARGETS, "text_form": WITH_OTHERS, "init": payload["sha256"][:16], "separator": separator_ckpt,
            "separator_sha256": _file_hash(separator_ckpt), "shards": {str(d): shard_dir_hash(d) for d in shard_dirs},
            "steps": int(steps), "seed": int(seed), "tuples": len(samples), "extra_samples": len(extra_samples),
            "examples": len(examples),
            "clip_s": crop, **report}
    sha = save_judge(out, model, cfg, meta=meta)
    return {"checkpoint": str(out), "checkpoint_hash": sha[:16], "sha256": sha, "targets": TARGETS, "text_form": WITH_OTHERS,
            "init": payload["sha256"][:16], "steps": int(steps), "tuples": len(samples), "examples": len(examples),
            "train_examples": len(train), "seconds": round(time.time() - t0, 1), "history": history, **report}


def _file_hash(path: str | Path) -> str:
    from models.judge.checkpoint import file_sha256

    return file_sha256(path)[:16]
