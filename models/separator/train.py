"""Train the separator from weighted sample sources (synthetic shards, ITT, SST) for a budget of optimiser steps.

- Loss: ClearSep eq. 5, ``-lambda SDR - (1 - lambda) SI-SDR`` (lambda 0.9, zero-mean SI-SDR as CLAPSep's code).
  SDR is undefined for an all-zero target, so silent targets (silence augmentation, absent-class SST samples) use
  an energy loss instead: ``-10 log10(|X|^2 / (|x_hat|^2 + 10^(floor/10) |X|^2))``, i.e. minus the Silence-SDR
  with a floor (default -30 dB, the Silence-SDR target) so that the loss saturates instead of chasing -inf, and
  weighted by `silent_weight` so silent examples cannot dominate present ones. The presence gate, when the preset
  has one, is trained by a BCE loss on "target present" only (the separation loss sees the ungated mask output).
- AdamW (0.9, 0.999); LR either ReduceLROnPlateau(factor 0.3, patience 5) on the validation loss down to `min_lr`,
  or cosine from `lr` to `min_lr` over `max_steps`; gradient clipping, bfloat16 autocast on CUDA.
- Budget: `max_steps` optimiser steps (not wall time, so the same config gives the same model on every machine and
  every rank of a distributed run stops at the same step). Every `steps_per_epoch` steps (and at the last step):
  validation, `last.pt` (with optimiser state) and `best.pt` (lowest validation loss).
- Data: `DrawPlan` makes the sample of every draw a pure function of (seed, step, slot) and the source lengths, so
  resuming from `last.pt` at step s reads exactly what an uninterrupted run reads from step s on, with no replay.
- Distributed: when `torch.distributed` is initialised (Ray Train, engine/ray_train.py), the model is wrapped in
  DDP and rank r trains on slots [r*B/W, (r+1)*B/W) of each global batch of `batch_size` B; the averaged gradient
  is the single-process gradient of the same global batch. Rank 0 validates (and broadcasts the metrics) and
  writes the checkpoints. This loop is the only one: single-process training is the world-size-1 case.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from models import metrics as M
from models.device import resolve_device
from models.separator.base import apply_gate
from models.separator.checkpoint import (Checkpoint, load_checkpoint, model_from_checkpoint, resume_train_state,
                                       save_checkpoint, trainable_state)
from models.separator.config import SeparatorConfig
from models.separator.data import Example, SampleSource, make_example, sample_phrases, sample_vocabulary, source_metas
from models.separator.presets import build_model, model_hparams
from models.text import CachedQueries, TextEncoder, encoder_spec, load_text_encoder

log = logging.getLogger("stemforge.separator.train")

Streams = Sequence[tuple[SampleSource, float]]


@dataclass
class TrainResult:
    best: Path
    last: Path
    epochs: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)


class DrawPlan:
    """Which sample every draw of a run reads, as a pure function of (seed, step, slot) and the source lengths.

    Draw g = step * global_batch + slot. Its source is drawn by weight from `default_rng([seed, 3, step])`; within
    source k the draws are numbered in order (position p), and p maps to sample `perm(seed, k, p // N_k)[p % N_k]`,
    a fresh seeded permutation per pass ("epoch" of that source), so every sample of a source is read once per pass
    across all ranks: rank r takes slots [r*B/W, (r+1)*B/W) of each global batch, disjoint from the others. The
    per-source positions at step s follow from the choices of steps < s (a few microseconds per step to recount),
    so seeking to any step needs no data.
    """

    def __init__(self, lengths: Sequence[int], weights: Sequence[float], seed: int, global_batch: int):
        w = np.array([float(x) for x in weights], dtype=np.float64)
        if len(lengths) == 0:
            raise ValueError("train_separator needs at least one sample source")
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {w.tolist()}")
        for k, (n, wk) in enumerate(zip(lengths, w)):
            if n <= 0 and wk > 0:
                raise ValueError(f"training source #{k} has no samples")
        self.lengths = [int(n) for n in lengths]
        self.cum = np.cumsum(w / w.sum())
        self.cum[-1] = 1.0
        self.seed = int(seed)
        self.global_batch = int(global_batch)
        self._step = 0
        self._counts = np.zeros(len(self.lengths), dtype=np.int64)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _choices(self, step: int) -> np.ndarray:
        u = np.random.default_rng([self.seed, 3, step]).random(self.global_batch)
        return np.searchsorted(self.cum, u, side="right").clip(0, len(self.lengths) - 1)

    def _perm(self, k: int, epoch: int) -> np.ndarray:
        key = (k, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.lengths):
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, 4, k, epoch]).permutation(self.lengths[k])
        return self._perms[key]

    def step(self, step: int) -> list[tuple[int, int, int]]:
        """`[(source, sample index, draw number)]` of the global batch at `step`, slot order."""
        if step < self._step:
            self._step, self._counts[:] = 0, 0
        while self._step < step:
            self._counts += np.bincount(self._choices(self._step), minlength=len(self.lengths))
            self._step += 1
        choices = self._choices(step)
        counts = self._counts.copy()
        out = []
        for slot, k in enumerate(choices):
            k = int(k)
            p = int(counts[k])
            counts[k] += 1
            n = self.lengths[k]
            out.append((k, int(self._perm(k, p // n)[p % n]), step * self.global_batch + slot))
        return out


class RankBatches(torch.utils.data.Dataset):
    """Map-style dataset: item `step` is this rank's share of the global batch at that step, cropped and with its
    query sides chosen by a generator seeded by the draw number (so the example is the same whichever rank, worker
    or resumed process builds it)."""

    def __init__(self, sources: Sequence[SampleSource], plan: DrawPlan, rank: int, world: int, cfg: SeparatorConfig,
                 vocab: list[str], phrases: dict[str, list[str]]):
        self.sources, self.plan, self.cfg = list(sources), plan, cfg
        self.lo, self.hi = rank * (cfg.batch_size // world), (rank + 1) * (cfg.batch_size // world)
        self.vocab, self.phrases = vocab, phrases
        self.length = int(round(cfg.segment_s * cfg.sample_rate))

    def __len__(self) -> int:
        return self.cfg.max_steps

    def examples(self, step: int) -> list[Example]:
        out = []
        for k, i, g in self.plan.step(step)[self.lo:self.hi]:
            rng = np.random.default_rng([self.plan.seed, 2, g])
            out.append(make_example(self.sources[k][i], rng, self.length, self.cfg.query_mix, self.cfg.silence_aug_prob,
                                    self.vocab, self.phrases, query_forms=self.cfg.query_forms))
        return out

    def __getitem__(self, step: int) -> dict[str, Any]:
        ex = self.examples(step)
        return {"mix": np.stack([e.mix for e in ex]), "target": np.stack([e.target for e in ex]),
                "pos": [e.positive for e in ex], "neg": [e.negative for e in ex], "silent": [e.silent for e in ex]}


def _keep(item: Any) -> Any:
    return item


def _tensors(item: dict[str, Any], queries: CachedQueries, device: torch.device) -> dict[str, torch.Tensor]:
    return {"mix": torch.as_tensor(item["mix"]).to(device), "target": torch.as_tensor(item["target"]).to(device),
            "pos": queries(item["pos"]).to(device), "neg": queries(item["neg"]).to(device),
            "silent": torch.tensor(item["silent"], device=device)}


def _batch(examples: list[Example], queries: CachedQueries, device: torch.device) -> dict[str, torch.Tensor]:
    return _tensors({"mix": np.stack([e.mix for e in examples]), "target": np.stack([e.target for e in examples]),
                     "pos": [e.positive for e in examples], "neg": [e.negative for e in examples],
                     "silent": [e.silent for e in examples]}, queries, device)


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



def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _configure_threads(cfg: SeparatorConfig, device: torch.device) -> None:
    if device.type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)


def cosine_lr(cfg: SeparatorConfig, step: int) -> float:
    """Cosine decay from `lr` to `min_lr` over the `max_steps` budget, scaled by a linear warm-up over the first
    `warmup_steps` (step s gets (s + 1) / warmup_steps of it; none when 0).

    Why: a plateau schedule rarely fires within a few hundred steps, while annealing to the end of a known budget
    is the standard way to get the most out of a fixed budget. The warm-up is for fine-tunes: AdamW starts with
    empty moments, so its first updates move every weight by about the full learning rate whatever the gradient's
    size, which undoes part of what the initial model had learned.
    """
    progress = min(1.0, max(0.0, step / max(1, cfg.max_steps)))
    lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.warmup_steps and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def load_result(out_dir: str | Path) -> TrainResult:
    """A finished (or interrupted) training run as recorded in its checkpoints (`last.pt`, `best.pt`)."""
    out = Path(out_dir)
    last, best = out / "last.pt", out / "best.pt"
    ck = load_checkpoint(last)
    state = ck.train_state or {}
    best_metrics = load_checkpoint(best).metrics if best.is_file() else {}
    return TrainResult(best=best, last=last, epochs=int(state.get("epoch", 0)), steps=int(state.get("step", 0)),
                       seconds=float(state.get("elapsed", 0.0)), history=list(state.get("history", [])),
                       best_metrics=dict(best_metrics))


def end_checkpoint(out_dir: str | Path) -> Path:
    """`end.pt`: the weights at the end of the step budget (`last.pt` without its optimiser state).

    Why: a fine-tune on a cosine schedule ends annealed at `min_lr`, while `best.pt` is chosen by the loss on the
    *synthetic* validation tuples; for a model fine-tuned on natural pseudo-labels that picks mid-schedule
    weights at a high learning rate (docs/perf/engine.md: separator_2's best was step 100 of 250)."""
    import dataclasses

    out = Path(out_dir)
    ck = load_checkpoint(out / "last.pt")
    return save_checkpoint(out / "end.pt", dataclasses.replace(ck, train_state=None))


def train_separator(cfg: SeparatorConfig, streams: Streams, val_samples: Sequence[dict[str, Any]],
                    out_dir: str | Path, init: str | Path | None = None, text_encoder: TextEncoder | None = None,
                    lineage: dict[str, Any] | None = None, resume: bool = True,
                    on_epoch: Callable[[dict[str, float]], None] | None = None,
                    on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or fine-tune from `init`, or resume from `out_dir/last.pt`) up to `cfg.max_steps`; returns the run as
    recorded in `best.pt` / `last.pt`.

    `streams` are `(source, weight)` with sources sized and indexable (`ShardSource`, a list of sample dicts, the ITT
    builder); `val_samples` is a fixed list (cropped once, deterministically). `on_epoch(metrics)` runs on every rank
    after each validation (the same metrics everywhere); `on_step(step)` after each optimiser step (fault injection in
    tests). Under `torch.distributed` every rank calls this with the same arguments (see the module docstring).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = _world()
    if cfg.batch_size % world:
        raise ValueError(f"separator.batch_size {cfg.batch_size} is not divisible by the {world} training workers")
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
        lineage = ck.lineage
        log.info("resuming from %s (step %s)", last_path, state and state.get("step"))
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
    net: torch.nn.Module = model
    if world > 1:
        # an ungated output leaves the gate head without gradient unless its BCE term trains it
        unused = hparams.get("presence_gate", False) and cfg.gate_loss_weight == 0
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                        find_unused_parameters=bool(unused))
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience, min_lr=cfg.min_lr)

    sources = [s for s, _ in streams]
    lengths = [len(s) for s in sources]
    plan = DrawPlan(lengths, [w for _, w in streams], cfg.seed, cfg.batch_size)
    metas = [m for s in sources for m in source_metas(s)]
    vocab = sorted(set(sample_vocabulary(val_samples)) | set(sample_vocabulary({"json": m} for m in metas)))
    phrases = sample_phrases({"json": m} for m in metas)
    val_rng = np.random.default_rng([cfg.seed, 1])
    # validation asks as stored: comparable across configs (query_forms on or off)
    val = [make_example(s, val_rng, length, {}, 0.0, vocab, query_forms=False) for s in list(val_samples)[: cfg.val_max]]
    if not val:
        raise ValueError("train_separator needs at least one validation sample")

    epoch, step, history, best_loss, elapsed0 = 0, 0, [], math.inf, 0.0
    if state:
        resume_train_state(state, last_path, opt, sched)
        epoch, step, history = state["epoch"], state["step"], list(state["history"])
        best_loss, elapsed0 = state["best_loss"], state.get("elapsed", 0.0)
        if state.get("lengths") != lengths:
            log.warning("%s: the sources changed since this checkpoint (lengths %s -> %s); draws after step %d differ "
                        "from an uninterrupted run", last_path, state.get("lengths"), lengths, step)
    if lineage is None or "streams" not in lineage:
        lineage = {**(lineage or {}), "streams": [
            {"weight": float(w), "kind": type(s).__name__, "samples": len(s),
             **({"shards": s.lineage()} if hasattr(s, "lineage") else {})} for s, w in streams]}
    cfg_dict = cfg.model_dump()
    t0 = time.monotonic() - elapsed0

    def save(path: Path, metrics: dict[str, float], with_state: bool) -> None:
        train_state = None
        if with_state:
            train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                           "history": history, "best_loss": best_loss, "lengths": lengths,
                           "elapsed": time.monotonic() - t0}
        save_checkpoint(path, Checkpoint(preset=cfg.preset, hparams=hparams, state_dict=trainable_state(model),
                                         text_encoder=encoder_spec(encoder), config=cfg_dict, lineage=lineage,
                                         metrics=metrics, train_state=train_state))

    data = RankBatches(sources, plan, rank, world, cfg, vocab, phrases)
    # forkserver, not fork: a forked worker inherits the parent's thread-exit hooks (Prefect's services register
    # some in every process that ran a flow) and exits with code 1 when it ends
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(step, cfg.max_steps),
                                         num_workers=cfg.workers, collate_fn=_keep,
                                         multiprocessing_context="forkserver" if cfg.workers > 0 else None)
    losses: list[float] = []
    for item in loader:
        if cfg.lr_schedule == "cosine":
            set_lr(opt, cosine_lr(cfg, step))
        batch = _tensors(item, queries, device)
        opt.zero_grad(set_to_none=True)
        total, _ = _step_loss(net, batch, cfg, amp)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        losses.append(total.item())
        if on_step:
            on_step(step)
        if step % cfg.steps_per_epoch and step < cfg.max_steps:
            continue
        epoch += 1
        train_loss = float(np.mean(losses))
        if world > 1:  # the mean over the global batch, like a single process
            t = torch.tensor([train_loss], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            train_loss = float(t.item()) / world
        metrics: dict[str, Any] = {}
        if rank == 0:
            metrics = validate(model, val, queries, cfg, device, amp)
            metrics.update(epoch=epoch, step=step, train_loss=train_loss, lr=opt.param_groups[0]["lr"],
                           elapsed_s=time.monotonic() - t0)
        if world > 1:
            box = [metrics]
            torch.distributed.broadcast_object_list(box, src=0)
            metrics = box[0]
        losses = []
        if cfg.lr_schedule == "plateau":
            sched.step(metrics["val_loss"])
        history.append(metrics)
        if metrics["val_loss"] < best_loss:
            best_loss = metrics["val_loss"]
            if rank == 0:
                save(best_path, metrics, with_state=False)
        if rank == 0:
            save(last_path, metrics, with_state=True)
            log.info("epoch %d step %d train %.2f val %.2f SI-SDRi %.2f dB silence-SDR %.1f dB lr %.1e", epoch, step,
                     metrics["train_loss"], metrics["val_loss"], metrics["si_sdri"], metrics["silence_sdr"], metrics["lr"])
        if on_epoch:
            on_epoch(metrics)
    if world > 1:
        torch.distributed.barrier()  # rank 0's last checkpoint is on disk before anyone reads it
    if not last_path.is_file():
        raise RuntimeError(f"{out}: no checkpoint written (max_steps={cfg.max_steps})")
    return load_result(out)
