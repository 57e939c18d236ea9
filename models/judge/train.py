"""Training the mini judge: proxy pre-training, then fine-tuning on (proxy or human) 1-5 ratings.

Stage 1 (SAJ's pre-training proxy task): for a synthetic tuple the output is either the true target (label 1) or
another source of the same mixture (label 0); the text is always the target's phrase; BCE on the binary head.
Stage 2: MAE + MSE on the four axes (SAJ found this far better than 21-bin classification). Without human ratings
the targets come from `proxy_ratings.degrade` (documented proxy); with ratings, `human_ratings.finetune` runs
the same loss on the user's table. Tuples are drawn fresh every step (no epoch re-use), all from `cfg.seed`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from scipy import stats

from models.judge.checkpoint import save_checkpoint
from models.judge.config import JudgeConfig
from models.judge.model import AXES, MiniJudge
from models.judge.proxy_ratings import degrade
from models.judge.tuples import Phrases, SourcePool, make_tuple

log = logging.getLogger("stemforge.judge")
FORMAT = "stemforge.judge.mini"
VERSION = 1
MODEL_KEYS = ("sample_rate", "n_mels", "hop", "dim", "heads", "layers", "text_vocab", "max_text_tokens")


def build_model(cfg: JudgeConfig | Mapping) -> MiniJudge:
    get = (lambda k: cfg[k]) if isinstance(cfg, Mapping) else (lambda k: getattr(cfg, k))
    return MiniJudge(**{k: get(k) for k in MODEL_KEYS})


def proxy_batch(pool: SourcePool, rng: np.random.Generator, cfg: JudgeConfig, phrases: Phrases):
    n = int(cfg.clip_seconds * pool.sample_rate)
    mixes, outs, texts, labels = [], [], [], []
    for _ in range(cfg.train_batch):
        t = make_tuple(pool, rng, n, cfg.min_sources, cfg.max_sources, tuple(cfg.snr_db), phrases)
        positive = rng.random() < 0.5
        outs.append(t.target if positive else t.others[int(rng.integers(len(t.others)))])
        mixes.append(t.mixture)
        texts.append(t.text)
        labels.append(float(positive))
    return np.stack(mixes), np.stack(outs), texts, np.asarray(labels, dtype=np.float32)


def rating_batch(pool: SourcePool, rng: np.random.Generator, cfg: JudgeConfig, phrases: Phrases,
                 size: int | None = None):
    n = int(cfg.clip_seconds * pool.sample_rate)
    mixes, outs, texts, ys = [], [], [], []
    for _ in range(size or cfg.train_batch):
        t = make_tuple(pool, rng, n, cfg.min_sources, cfg.max_sources, tuple(cfg.snr_db), phrases)
        d = degrade(t, rng, pool.sample_rate)
        mixes.append(t.mixture)
        outs.append(d.output)
        texts.append(t.text)
        ys.append([d.ratings[a] for a in AXES])
    return np.stack(mixes), np.stack(outs), texts, np.asarray(ys, dtype=np.float32)


def rating_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MAE + MSE over the four axes."""
    return (pred - y).abs().mean() + (pred - y).pow(2).mean()


@dataclass
class TrainReport:
    pretrain_steps: int = 0
    finetune_steps: int = 0
    seconds: float = 0.0
    proxy_acc: float = float("nan")
    history: list[dict] = field(default_factory=list)


def _t(x: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(x).to(dev)


def make_optimizer(model: MiniJudge, cfg: JudgeConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-2)


def _step(opt: torch.optim.Optimizer, model: MiniJudge, loss: torch.Tensor) -> None:
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def pretrain_proxy(model: MiniJudge, pool: SourcePool, cfg: JudgeConfig, device: torch.device,
                   phrases: Phrases = None, on_step: Callable[[str, int, float], None] | None = None) -> float:
    """Stage 1: BCE on "does the output contain the prompted target?"; returns the last-20-step accuracy."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    opt = make_optimizer(model, cfg)
    accs: list[float] = []
    for step in range(cfg.pretrain_steps):
        m, o, texts, lab = proxy_batch(pool, rng, cfg, phrases)
        _, logit = model(_t(m, device), _t(o, device), texts)
        y = _t(lab, device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y)
        _step(opt, model, loss)
        accs.append(float(((logit.detach() > 0).float() == y).float().mean()))
        if on_step:
            on_step("pretrain", step, float(loss.detach()))
    model.eval()
    return float(np.mean(accs[-20:])) if accs else float("nan")


def finetune_ratings(model: MiniJudge, next_batch: Callable[[np.random.Generator], tuple], steps: int,
                     cfg: JudgeConfig, device: torch.device,
                     on_step: Callable[[str, int, float], None] | None = None) -> list[dict]:
    """Stage 2: MAE + MSE on the four axes over batches from `next_batch(rng) -> (mix, out, texts, y[B, 4])`.

    Shared by the proxy-ratings path (below) and the human-ratings path (`human_ratings.finetune_human`)."""
    torch.manual_seed(cfg.seed + 1)
    rng = np.random.default_rng(cfg.seed + 1)
    model.to(device).train()
    opt = make_optimizer(model, cfg)
    # pct_start 0.1 divides by zero in OneCycleLR at exactly 10 steps (warm-up end = step 0); short runs warm up longer
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, steps),
                                                pct_start=0.1 if steps >= 20 else 0.3)
    history = []
    for step in range(steps):
        m, o, texts, y = next_batch(rng)
        pred, _ = model(_t(m, device), _t(o, device), texts)
        loss = rating_loss(pred, _t(y, device))
        _step(opt, model, loss)
        sched.step()
        if on_step:
            on_step("finetune", step, float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            history.append({"step": step, "loss": float(loss.detach())})
    model.eval()
    return history


def train_proxy_and_ratings(model: MiniJudge, pool: SourcePool, cfg: JudgeConfig, device: torch.device,
                            phrases: Phrases = None,
                            on_step: Callable[[str, int, float], None] | None = None) -> TrainReport:
    """Stage 1 + stage 2 on PROXY ratings (no human ratings available), in place on `model`."""
    rep, t0 = TrainReport(), time.time()
    rep.proxy_acc = pretrain_proxy(model, pool, cfg, device, phrases, on_step)
    rep.pretrain_steps = cfg.pretrain_steps
    rep.history = finetune_ratings(model, lambda rng: rating_batch(pool, rng, cfg, phrases), cfg.finetune_steps,
                                   cfg, device, on_step)
    rep.finetune_steps = cfg.finetune_steps
    rep.seconds = time.time() - t0
    return rep


def correlations(pred: np.ndarray, true: np.ndarray) -> dict[str, dict[str, float]]:
    """PCC and SRCC per axis (`[N, 4]` arrays ordered as AXES)."""
    out = {}
    for i, axis in enumerate(AXES):
        p, t = pred[:, i], true[:, i]
        ok = np.std(p) > 1e-9 and np.std(t) > 1e-9
        out[axis] = {"pcc": float(stats.pearsonr(p, t)[0]) if ok else float("nan"),
                     "srcc": float(stats.spearmanr(p, t)[0]) if ok else float("nan"),
                     "mae": float(np.mean(np.abs(p - t)))}
    return out


@torch.no_grad()
def predict(model: MiniJudge, mixes: np.ndarray, outs: np.ndarray, texts: list[str], device: torch.device,
            batch: int = 32) -> np.ndarray:
    model.eval()
    res = []
    for i in range(0, len(mixes), batch):
        p, _ = model(_t(mixes[i:i + batch], device), _t(outs[i:i + batch], device), texts[i:i + batch])
        res.append(p.cpu().numpy())
    return np.concatenate(res)


def evaluate_proxy(model: MiniJudge, pool: SourcePool, cfg: JudgeConfig, device: torch.device,
                   phrases: Phrases = None, n: int | None = None, seed: int | None = None) -> dict:
    """PCC/SRCC per axis on `n` fresh proxy-rated tuples from `pool` (pass a held-out pool)."""
    rng = np.random.default_rng(cfg.seed + 10_007 if seed is None else seed)
    m, o, texts, y = rating_batch(pool, rng, cfg, phrases, size=n or cfg.eval_tuples)
    pred = predict(model, m, o, texts, device)
    return {"n": int(len(y)), "axes": correlations(pred, y)}


def save_judge(path, model: MiniJudge, cfg: JudgeConfig, meta: dict | None = None) -> str:
    config = {k: getattr(cfg, k) for k in MODEL_KEYS}
    return save_checkpoint(path, FORMAT, VERSION, config, model.state_dict(), meta)
