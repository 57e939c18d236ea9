"""Training and calibration of the mini PC estimator (a documented proxy, see `models.aesthetics.mini`)."""
from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np
import torch
from scipy import stats

from models.aesthetics.config import PCConfig
from models.aesthetics.mini import MiniPC, make_pc_example
from models.judge.checkpoint import save_checkpoint
from models.judge.tuples import SourcePool

FORMAT = "stemforge.pc.mini"
VERSION = 1
MODEL_KEYS = ("sample_rate", "n_mels", "hop", "channels")
THRESHOLD = 2.5


def build_model(cfg: PCConfig | Mapping) -> MiniPC:
    get = (lambda k: cfg[k]) if isinstance(cfg, Mapping) else (lambda k: getattr(cfg, k))
    return MiniPC(**{k: get(k) for k in MODEL_KEYS})


def pc_batch(pool: SourcePool, rng: np.random.Generator, cfg: PCConfig, size: int | None = None):
    n = int(cfg.clip_seconds * pool.sample_rate)
    xs, ys, ks, bgs = [], [], [], []
    for _ in range(size or cfg.train_batch):
        x, y, k, bg = make_pc_example(pool, rng, n, cfg.max_sources, cfg.background_prob, tuple(cfg.snr_db))
        xs.append(x), ys.append(y), ks.append(k), bgs.append(np.nan if bg is None else bg)
    return np.stack(xs), np.asarray(ys, np.float32), np.asarray(ks), np.asarray(bgs, np.float32)


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle LR over `steps` with a 10% warm-up of at least two steps: OneCycleLR divides by zero when the
    warm-up ends exactly at step 0 (0.1 x 10 steps - 1 = 0), which made `pc.steps: 10` crash."""
    total = max(1, int(steps))
    warm = max(0.1, 2.0 / total) if total >= 3 else 0.1
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=warm)


def train_pc(model: MiniPC, pool: SourcePool, cfg: PCConfig, device: torch.device,
             on_step: Callable[[int, float], None] | None = None) -> float:
    """MAE + MSE regression to the proxy PC; returns seconds spent."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-2)
    sched = one_cycle(opt, cfg.lr, cfg.steps)
    t0 = time.time()
    for step in range(cfg.steps):
        x, y, _, _ = pc_batch(pool, rng, cfg)
        pred = model(torch.from_numpy(x).to(device))
        yt = torch.from_numpy(y).to(device)
        loss = (pred - yt).abs().mean() + (pred - yt).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if on_step:
            on_step(step, float(loss.detach()))
    model.eval()
    return time.time() - t0


@torch.no_grad()
def evaluate_pc(model: MiniPC, pool: SourcePool, cfg: PCConfig, device: torch.device, n: int | None = None,
                seed: int | None = None) -> dict:
    """Calibration on fresh mixtures from `pool` (pass a held-out pool): PCC/SRCC to the proxy target, mean PC per
    number of sources, and how often the `PC < 2.5` rule classifies "single clean source" correctly."""
    rng = np.random.default_rng(cfg.seed + 20_011 if seed is None else seed)
    x, y, k, bg = pc_batch(pool, rng, cfg, size=n or cfg.eval_mixtures)
    model.eval()
    pred = np.concatenate([model(torch.from_numpy(x[i:i + 32]).to(device)).cpu().numpy() for i in range(0, len(x), 32)])
    clean_single = (k == 1) & np.isnan(bg)
    simple_truth = y < THRESHOLD
    per_k = {}
    for kk in sorted(set(k.tolist())):
        sel = (k == kk) & np.isnan(bg)
        if sel.any():
            per_k[f"{kk}_no_bg"] = float(pred[sel].mean())
        sel = (k == kk) & ~np.isnan(bg)
        if sel.any():
            per_k[f"{kk}_with_bg"] = float(pred[sel].mean())
    return {
        "n": int(len(y)),
        "pcc": float(stats.pearsonr(pred, y)[0]),
        "srcc": float(stats.spearmanr(pred, y)[0]),
        "mae": float(np.mean(np.abs(pred - y))),
        "mean_pc_by_sources": per_k,
        "single_clean_below_2.5": float((pred[clean_single] < THRESHOLD).mean()) if clean_single.any() else float("nan"),
        "multi_source_at_or_above_2.5": float((pred[k >= 2] >= THRESHOLD).mean()) if (k >= 2).any() else float("nan"),
        "threshold_agreement": float(((pred < THRESHOLD) == simple_truth).mean()),
    }


def save_pc(path, model: MiniPC, cfg: PCConfig, meta: dict | None = None) -> str:
    return save_checkpoint(path, FORMAT, VERSION, {k: getattr(cfg, k) for k in MODEL_KEYS}, model.state_dict(), meta)
