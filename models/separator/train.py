"""Train the separator from weighted sample streams (synthetic shards, ITT, SST) with validation each epoch.

- Loss: ClearSep eq. 5, ``-lambda SDR - (1 - lambda) SI-SDR`` (lambda 0.9, zero-mean SI-SDR as CLAPSep's code).
  SDR is undefined for an all-zero target, so silent targets (silence augmentation, absent-class SST samples) use
  an energy loss instead: ``-10 log10(|X|^2 / (|x_hat|^2 + 10^(floor/10) |X|^2))``, i.e. minus the Silence-SDR
  with a floor (default -30 dB, the Silence-SDR target) so that the loss saturates instead of chasing -inf, and
  weighted by `silent_weight` so silent examples cannot dominate present ones. The presence gate, when the preset
  has one, is trained by a BCE loss on "target present" only (the separation loss sees the ungated mask output).
- AdamW (0.9, 0.999), ReduceLROnPlateau(factor 0.3, patience 5) on the validation loss down to `min_lr`,
  gradient clipping, bfloat16 autocast on CUDA.
- An epoch is `steps_per_epoch` optimiser steps; after each epoch: validation, `last.pt` (with optimiser state and
  stream positions) and `best.pt` (lowest validation loss). Resuming from `last.pt` skips exactly the samples
  already consumed from each stream and restores the RNG, so the data order is the one an uninterrupted run sees.
- CPU data parallelism: `grad_threads > 1` splits every batch into slices whose gradients are computed in parallel
  threads and summed in a fixed order (`parallel_backward`): the same update as the whole batch, on more cores.
"""
from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from models import metrics as M
from models.separator.base import apply_gate
from models.separator.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint, trainable_state
from models.separator.config import SeparatorConfig
from models.separator.data import Example, make_example, sample_phrases, sample_vocabulary
from models.separator.presets import build_model, model_hparams
from models.text import CachedQueries, TextEncoder, encoder_spec, load_text_encoder
from models.device import resolve_device

log = logging.getLogger("stemforge.separator.train")


@dataclass
class TrainResult:
    best: Path
    last: Path
    epochs: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)


def separation_loss(est: torch.Tensor, target: torch.Tensor, mix: torch.Tensor, silent: torch.Tensor,
                    sdr_weight: float, silent_floor_db: float, silent_weight: float = 1.0) -> torch.Tensor:
    """Per-example loss `[B]` (see module docstring); float32/float64 safe, never NaN for silent targets."""
    est = est.float()
    target = target.float()
    eps = 1e-8
    t_e = target.pow(2).sum(-1)
    sdr = 10 * torch.log10((t_e + eps) / ((target - est).pow(2).sum(-1) + eps))
    e0, t0 = est - est.mean(-1, keepdim=True), target - target.mean(-1, keepdim=True)
    alpha = ((e0 * t0).sum(-1, keepdim=True) + eps) / (t0.pow(2).sum(-1, keepdim=True) + eps)
    s = alpha * t0
    sisdr = 10 * torch.log10((s.pow(2).sum(-1) + eps) / ((e0 - s).pow(2).sum(-1) + eps))
    active = -sdr_weight * sdr - (1 - sdr_weight) * sisdr
    m_e = mix.float().pow(2).sum(-1)
    floor = 10 ** (silent_floor_db / 10)
    quiet = -10 * torch.log10((m_e + eps) / (est.pow(2).sum(-1) + floor * m_e + eps))
    return torch.where(silent, silent_weight * quiet, active)


class StreamMixer:
    """Draws samples from several streams by weight; each stream restarts when exhausted; counts consumption."""

    def __init__(self, streams: Sequence[tuple[Iterable[dict[str, Any]], float]], rng: np.random.Generator,
                 workers: int = 0, consumed: list[int] | None = None):
        if not streams:
            raise ValueError("train_separator needs at least one sample stream")
        weights = np.array([float(w) for _, w in streams], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"stream weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.sources = [s for s, _ in streams]
        self.p = weights / weights.sum()
        self.rng = rng
        self.workers = workers
        self.consumed = list(consumed) if consumed else [0] * len(self.sources)
        self._iters: list[Iterator[dict[str, Any]] | None] = [None] * len(self.sources)
        for i, n in enumerate(self.consumed):
            if n:
                it = self._open(i)
                skipped = sum(1 for _ in islice(it, n))
                self._iters[i] = it
                if skipped < n:  # the stream is shorter than recorded (it changed): start it afresh
                    self._iters[i] = None
                    self.consumed[i] = 0

    def _open(self, i: int) -> Iterator[dict[str, Any]]:
        src = self.sources[i]
        if self.workers > 0 and isinstance(src, torch.utils.data.IterableDataset):
            loader = torch.utils.data.DataLoader(src, batch_size=None, num_workers=self.workers)
            return iter(loader)
        return iter(src)

    def next(self) -> dict[str, Any]:
        i = int(self.rng.choice(len(self.sources), p=self.p))
        for attempt in range(2):
            if self._iters[i] is None:
                self._iters[i] = self._open(i)
            try:
                sample = next(self._iters[i])  # type: ignore[arg-type]
                self.consumed[i] += 1
                return sample
            except StopIteration:
                self._iters[i] = None
                self.consumed[i] = 0
        raise ValueError(f"training stream #{i} yields no samples")


def _batch(examples: list[Example], queries: CachedQueries, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "mix": torch.from_numpy(np.stack([e.mix for e in examples])).to(device),
        "target": torch.from_numpy(np.stack([e.target for e in examples])).to(device),
        "pos": queries([e.positive for e in examples]).to(device),
        "neg": queries([e.negative for e in examples]).to(device),
        "silent": torch.tensor([e.silent for e in examples], device=device),
    }


def _step_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: SeparatorConfig, amp: bool) -> tuple[torch.Tensor, Any]:
    with torch.autocast(device_type=batch["mix"].device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(batch["mix"], batch["pos"], batch["neg"])
    loss = separation_loss(out.estimate, batch["target"], batch["mix"], batch["silent"], cfg.sdr_weight,
                           cfg.silent_floor_db, cfg.silent_weight)
    total = loss.mean()
    if out.gate_logit is not None and cfg.gate_loss_weight > 0:
        present = (~batch["silent"]).float()
        total = total + cfg.gate_loss_weight * torch.nn.functional.binary_cross_entropy_with_logits(out.gate_logit.float(), present)
    return total, out


def _slice_batch(batch: dict[str, torch.Tensor], sl: slice) -> dict[str, torch.Tensor]:
    return {k: v[sl] for k, v in batch.items()}


def parallel_backward(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: dict[str, torch.Tensor],
                      cfg: SeparatorConfig, amp: bool, pool: ThreadPoolExecutor, parts: int) -> torch.Tensor:
    """Set `p.grad` to the full-batch gradient, computed as `parts` slices in parallel threads; returns the loss.

    Why threads: on CPU a second intra-op thread made the `tiny` step *slower* (docs/perf/separator.md), while two
    half-batches computed side by side use both cores (torch releases the GIL inside its kernels). Each slice's
    mean loss is weighted by its share of the batch, so the summed gradient equals the full-batch one; the
    slices' gradients are added in a fixed order, so the result does not depend on thread timing.
    """
    n = int(batch["mix"].shape[0])
    bounds = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def work(sl: slice) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        total, _ = _step_loss(model, _slice_batch(batch, sl), cfg, amp)
        scaled = total * ((sl.stop - sl.start) / n)
        return scaled.detach(), torch.autograd.grad(scaled, params, allow_unused=True)

    results = list(pool.map(work, slices))
    for i, p in enumerate(params):
        parts_i = [g[i] for _, g in results if g[i] is not None]
        p.grad = torch.stack(parts_i).sum(0) if parts_i else None
    return torch.stack([loss for loss, _ in results]).sum()


@torch.no_grad()
def validate(model: torch.nn.Module, val: list[Example], queries: CachedQueries, cfg: SeparatorConfig,
             device: torch.device, amp: bool) -> dict[str, float]:
    """Mean loss, SI-SDRi / SDRi over present targets, Silence-SDR over silent ones (metrics in float64, on the
    output as inference produces it: hard presence gate at `gate_threshold`)."""
    model.eval()
    losses, sisdri, sdri, silence = [], [], [], []
    for i in range(0, len(val), cfg.batch_size):
        batch = _batch(val[i:i + cfg.batch_size], queries, device)
        total, out = _step_loss(model, batch, cfg, amp)
        losses.append(float(total) * len(batch["mix"]))
        est = apply_gate(out, cfg.gate_threshold).float().cpu()
        tgt, mix, silent = batch["target"].cpu(), batch["mix"].cpu(), batch["silent"].cpu()
        if (~silent).any():
            sisdri += M.si_sdri(est[~silent], tgt[~silent], mix[~silent], zero_mean=True).tolist()
            sdri += M.sdri(est[~silent], tgt[~silent], mix[~silent]).tolist()
        if silent.any():
            silence += M.silence_sdr(est[silent], mix[silent]).tolist()
    model.train()
    nan = float("nan")
    return {"val_loss": sum(losses) / max(1, len(val)),
            "si_sdri": float(np.mean(sisdri)) if sisdri else nan,
            "sdri": float(np.mean(sdri)) if sdri else nan,
            "silence_sdr": float(np.mean(silence)) if silence else nan}


def cosine_lr(cfg: SeparatorConfig, step: int, elapsed_s: float) -> float:
    """Cosine decay from `lr` to `min_lr` over whichever budget binds first (wall time or epochs x steps).

    Why: runs here are capped by wall-clock time; a plateau schedule rarely fires within a few minutes, while
    annealing to the end of the known budget is the standard way to get the most out of a fixed budget.
    """
    progress = elapsed_s / cfg.time_budget_s if cfg.time_budget_s > 0 else 0.0
    progress = max(progress, step / max(1, cfg.max_epochs * cfg.steps_per_epoch))
    progress = min(1.0, max(0.0, progress))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _configure_threads(cfg: SeparatorConfig, device: torch.device) -> None:
    if device.type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)


def train_separator(cfg: SeparatorConfig, streams: Sequence[tuple[Iterable[dict[str, Any]], float]],
                    val_samples: Sequence[dict[str, Any]], out_dir: str | Path, init: str | Path | None = None,
                    text_encoder: TextEncoder | None = None, lineage: dict[str, Any] | None = None,
                    resume: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train (or fine-tune from `init`, or resume from `out_dir/last.pt`) and write `best.pt` / `last.pt`.

    `streams` are `(iterable of sample dicts, weight)`; `val_samples` is a fixed list of sample dicts (cropped once,
    deterministically, so every epoch validates the same examples). `lineage` is recorded in checkpoints.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    _configure_threads(cfg, device)
    amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    encoder = text_encoder or load_text_encoder(cfg.text_encoder)
    queries = CachedQueries(encoder)
    length = int(round(cfg.segment_s * cfg.sample_rate))

    last_path, best_path = out / "last.pt", out / "best.pt"
    state: dict[str, Any] | None = None
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path)
        model = model_from_checkpoint(ck, last_path)
        state = ck.train_state
        log.info("resuming from %s (epoch %s)", last_path, state and state.get("epoch"))
    elif init is not None:
        ck = load_checkpoint(init)
        if ck.preset != cfg.preset:
            raise ValueError(f"{init}: checkpoint preset {ck.preset!r} differs from separator.preset {cfg.preset!r}")
        model = model_from_checkpoint(ck, init)
        lineage = {**(lineage or {}), "init": {"path": str(init), "lineage": ck.lineage, "metrics": ck.metrics}}
    else:
        model = build_model(cfg.preset, model_hparams(cfg, encoder.dim))
    hparams = getattr(model, "hparams")
    if hparams.get("query_dim") != encoder.dim:
        raise ValueError(f"text encoder dim {encoder.dim} != model query_dim {hparams.get('query_dim')}")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience, min_lr=cfg.min_lr)

    vocab = sample_vocabulary(val_samples)
    phrases: dict[str, list[str]] = {}
    val_rng = np.random.default_rng([cfg.seed, 1])
    val = [make_example(s, val_rng, length, {}, 0.0, vocab) for s in list(val_samples)[: cfg.val_max]]
    if not val:
        raise ValueError("train_separator needs at least one validation sample")

    epoch, step, history, best_loss, rng_state, consumed, elapsed0 = 0, 0, [], math.inf, None, None, 0.0
    if state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch, step, history = state["epoch"], state["step"], list(state["history"])
        best_loss, rng_state, consumed = state["best_loss"], state["rng"], state["consumed"]
        vocab = sorted(set(vocab) | set(state.get("vocab", [])))
        phrases = {k: list(v) for k, v in state.get("phrases", {}).items()}
        elapsed0 = state.get("elapsed", 0.0)
        torch.set_rng_state(state["torch_rng"])
    rng = np.random.default_rng([cfg.seed, 0])
    if rng_state is not None:
        rng.bit_generator.state = rng_state
    mixer = StreamMixer(streams, rng, cfg.workers, consumed)
    run_lineage = {**(lineage or {}), "streams": [{"weight": float(w), "kind": type(s).__name__,
                                                   **({"shards": s.lineage()} if hasattr(s, "lineage") else {})}
                                                  for s, w in streams]}
    cfg_dict = cfg.model_dump()
    t0 = time.monotonic() - elapsed0
    best_metrics: dict[str, float] = {}
    parallel = cfg.grad_threads > 1 and device.type == "cpu"  # one GPU already runs the batch in parallel
    pool = ThreadPoolExecutor(cfg.grad_threads, thread_name_prefix="sep-grad") if parallel else None

    def save(path: Path, metrics: dict[str, float], with_state: bool) -> None:
        train_state = None
        if with_state:
            train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                           "history": history, "best_loss": best_loss, "rng": rng.bit_generator.state,
                           "consumed": mixer.consumed, "vocab": vocab, "phrases": phrases, "elapsed": time.monotonic() - t0,
                           "torch_rng": torch.get_rng_state()}
        save_checkpoint(path, Checkpoint(preset=cfg.preset, hparams=hparams, state_dict=trainable_state(model),
                                         text_encoder=encoder_spec(encoder), config=cfg_dict, lineage=run_lineage,
                                         metrics=metrics, train_state=train_state))

    try:
        while epoch < cfg.max_epochs and time.monotonic() - t0 < cfg.time_budget_s:
            losses = []
            for _ in range(cfg.steps_per_epoch):
                samples = [mixer.next() for _ in range(cfg.batch_size)]
                vocab_new = sample_vocabulary(samples)
                if not set(vocab_new) <= set(vocab):
                    vocab = sorted(set(vocab) | set(vocab_new))
                phrases = sample_phrases(samples, phrases)
                examples = [make_example(s, rng, length, cfg.query_mix, cfg.silence_aug_prob, vocab, phrases) for s in samples]
                if cfg.lr_schedule == "cosine":
                    set_lr(opt, cosine_lr(cfg, step, time.monotonic() - t0))
                batch = _batch(examples, queries, device)
                opt.zero_grad(set_to_none=True)
                if pool is not None:
                    total = parallel_backward(model, params, batch, cfg, amp, pool, cfg.grad_threads)
                else:
                    total, _ = _step_loss(model, batch, cfg, amp)
                    total.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                step += 1
                losses.append(total.item())
                if time.monotonic() - t0 >= cfg.time_budget_s:
                    break
            epoch += 1
            metrics = validate(model, val, queries, cfg, device, amp)
            metrics.update(epoch=epoch, step=step, train_loss=float(np.mean(losses)), lr=opt.param_groups[0]["lr"],
                           elapsed_s=time.monotonic() - t0)
            if cfg.lr_schedule == "plateau":
                sched.step(metrics["val_loss"])
            history.append(metrics)
            log.info("epoch %d step %d train %.2f val %.2f SI-SDRi %.2f dB silence-SDR %.1f dB lr %.1e", epoch, step,
                     metrics["train_loss"], metrics["val_loss"], metrics["si_sdri"], metrics["silence_sdr"], metrics["lr"])
            if metrics["val_loss"] < best_loss:
                best_loss = metrics["val_loss"]
                best_metrics = dict(metrics)
                save(best_path, metrics, with_state=False)
            save(last_path, metrics, with_state=True)
            if on_epoch:
                on_epoch(metrics)
    finally:
        if pool is not None:
            pool.shutdown()
    if not last_path.is_file():
        raise RuntimeError(f"training stopped before the first epoch finished (time_budget_s={cfg.time_budget_s})")
    if not best_metrics and best_path.is_file():
        best_metrics = load_checkpoint(best_path).metrics
    return TrainResult(best=best_path, last=last_path, epochs=epoch, steps=step, seconds=time.monotonic() - t0,
                       history=history, best_metrics=best_metrics)
