"""Train the in-project mini CLAP on a source manifest (single-label clean clips).

Batches mix three kinds of items so the cosine scale means what the SAM Audio filter assumes:
- single clips with one of several texts for their label (label name, phrase, caption templates);
- mixtures of 2-3 classes, paired with the joined phrases of all of them or of one (a multi-source target);
- near-silence and label-free ambient noise, which match no text (an absent or ambience-only residual must score
  low); a quiet coloured-noise bed is also added under some labelled items (natural scenes have ambience).
A text "matches" an audio when both name exactly the same labels (the filter's target case) and "does not match"
when the labels are disjoint (the residual case); partial overlaps (text "dog" vs dog+rain) are ignored: forcing
them positive pulls every mixture towards the centroid of its texts, which lifts non-matching cosines above 0. Loss = symmetric multi-positive InfoNCE (learnable temperature)
+ a margin loss pushing matching cosines above `pos_margin` and non-matching below `neg_margin`; the margins
are what make the absolute thresholds (> 0.35 target, < 0.0 residual) meaningful rather than only the ranking.
Every random choice flows from `cfg.seed`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from models.clap.config import MiniClapTrainConfig
from models.clap.mini import MiniClap, words_of
from storage.audio import AudioConfig, AudioError, load_audio
from storage.manifests import iter_rows

log = logging.getLogger("stemforge.clap.train")

CAPTION_TEMPLATES: tuple[str, ...] = (
    "{x}", "{x}", "the sound of {x}", "{x} in the background", "a recording of {x}", "{x} nearby",
    "you can hear {x}", "{x} sound", "audio of {x}", "{x} close to the microphone",
)


@dataclass
class Clip:
    audio: np.ndarray
    label: str
    path: str


@dataclass
class TrainResult:
    model: MiniClap
    steps: int
    seconds: float
    final_loss: float
    classes: list[str]
    skipped: list[str] = field(default_factory=list)


def load_clips(manifest: str | Path, sample_rate: int, splits: Sequence[str] = ("train",)) -> tuple[list[Clip], list[str]]:
    """Single-label clips of the given splits, resampled; unreadable files are skipped and returned by message."""
    clips: list[Clip] = []
    skipped: list[str] = []
    cfg = AudioConfig(sample_rate=sample_rate)
    for row in iter_rows(manifest, columns=["path", "labels", "split"], expect="source_clip"):
        if row["split"] not in splits:
            continue
        labels = list(row["labels"] or [])
        if len(labels) != 1:
            skipped.append(f"{row['path']}: {len(labels)} labels (mini CLAP trains on single-label clips)")
            continue
        try:
            audio = load_audio(row["path"], cfg)
        except (AudioError, OSError) as exc:
            skipped.append(str(exc))
            continue
        clips.append(Clip(audio, labels[0], row["path"]))
    return clips, skipped


def text_for(labels: Sequence[str], phrases: dict[str, str], rng: np.random.Generator) -> str:
    """A random training text naming exactly `labels` (label name or phrase, in a template, joined)."""
    parts = []
    for label in labels:
        x = phrases.get(label, label) if rng.random() < 0.7 else label
        parts.append(x)
    order = rng.permutation(len(parts))
    parts = [parts[i] for i in order]
    joined = parts[0] if len(parts) == 1 else (", ".join(parts) if rng.random() < 0.5 else ", ".join(parts[:-1]) + " and " + parts[-1])
    return CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))].format(x=joined)


def build_vocab(classes: Sequence[str], phrases: dict[str, str]) -> list[str]:
    words: set[str] = set()
    for c in classes:
        words.update(words_of(c))
        words.update(words_of(phrases.get(c, c)))
    for t in CAPTION_TEMPLATES:
        words.update(words_of(t.replace("{x}", "")))
    words.add("and")
    return sorted(words)


def colored_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS noise with a random spectral slope between white and brown (a stand-in for room ambience)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.arange(len(spec)), 1.0)
    x = np.fft.irfft(spec * f ** (-rng.uniform(0.0, 1.0)), n)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


class BatchSampler:
    """Draws (texts, audio [B, T], match matrix [B, B]) from clips; match: 1 match, 0 non-match, -1 ignore."""

    def __init__(self, clips: list[Clip], phrases: dict[str, str], cfg: MiniClapTrainConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.phrases = phrases
        self.by_class: dict[str, list[Clip]] = {}
        for c in clips:
            self.by_class.setdefault(c.label, []).append(c)
        self.classes = sorted(self.by_class)
        self.n = int(round(cfg.crop_seconds * cfg.sample_rate))

    def _crop(self, audio: np.ndarray) -> np.ndarray:
        if len(audio) < self.n:
            audio = np.tile(audio, self.n // len(audio) + 1)
        start = int(self.rng.integers(0, len(audio) - self.n + 1))
        return audio[start:start + self.n]

    def _item(self) -> tuple[str, np.ndarray, frozenset[str], frozenset[str]]:
        cfg, rng = self.cfg, self.rng
        r = rng.random()
        if r < cfg.silence_prob:
            text_labels = [self.classes[int(rng.integers(len(self.classes)))]]
            level_db = rng.uniform(-90, -60) if rng.random() < 0.5 else rng.uniform(-40, -15)  # silence | ambience
            audio = colored_noise(rng, self.n) * 10 ** (level_db / 20)
            return text_for(text_labels, self.phrases, rng), audio.astype(np.float32), frozenset(text_labels), frozenset()
        k = 1
        if r < cfg.silence_prob + cfg.mix_prob and len(self.classes) > 1:
            k = int(rng.integers(2, min(3, len(self.classes)) + 1))
        labels = [self.classes[i] for i in rng.choice(len(self.classes), size=k, replace=False)]
        audio = np.zeros(self.n, dtype=np.float32)
        for label in labels:
            pool = self.by_class[label]
            x = self._crop(pool[int(rng.integers(len(pool)))].audio)
            audio += x * (10 ** (rng.uniform(-6, 0) / 20) if k > 1 else 1.0)
        if rng.random() < cfg.background_prob:
            rms = float(np.sqrt(np.mean(audio ** 2))) + 1e-8
            audio = audio + colored_noise(rng, self.n) * rms * 10 ** (-rng.uniform(10, 30) / 20)
        lo, hi = cfg.gain_db
        audio = audio * 10 ** (rng.uniform(lo, hi) / 20)
        peak = float(np.abs(audio).max())
        if peak > 1.0:
            audio = audio / peak
        text_labels = labels if (k == 1 or rng.random() < 0.5) else [labels[int(rng.integers(k))]]
        return text_for(text_labels, self.phrases, rng), audio.astype(np.float32), frozenset(text_labels), frozenset(labels)

    def sample(self, batch_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        items = [self._item() for _ in range(batch_size)]
        texts = [it[0] for it in items]
        audio = torch.from_numpy(np.stack([it[1] for it in items]))
        match = torch.full((batch_size, batch_size), -1.0)
        for i, (_, _, tl, _) in enumerate(items):
            for j, (_, _, _, al) in enumerate(items):
                if al and tl == al:
                    match[i, j] = 1.0
                elif not (tl & al):
                    match[i, j] = 0.0
        return texts, audio, match


def clap_loss(sims: torch.Tensor, logit_scale: torch.Tensor, match: torch.Tensor, cfg: MiniClapTrainConfig) -> torch.Tensor:
    """Multi-positive symmetric InfoNCE over `sims [texts, audios]` + margin terms around the filter thresholds."""
    logits = sims * logit_scale.exp().clamp(max=100.0)
    valid = match >= 0
    pos = match > 0
    total = sims.new_zeros(())
    for lg, v, p in ((logits, valid, pos), (logits.T, valid.T, pos.T)):
        rows = p.any(dim=1)
        if rows.any():
            lg_m = lg.masked_fill(~v, float("-inf"))
            logp = F.log_softmax(lg_m, dim=1)
            target = p.float() / p.float().sum(dim=1, keepdim=True).clamp(min=1.0)
            total = total + 0.5 * (-(target * logp.masked_fill(~v, 0.0)).sum(dim=1))[rows].mean()
    neg = match == 0
    margin = sims.new_zeros(())
    if pos.any():
        margin = margin + F.relu(cfg.pos_margin - sims[pos]).pow(2).mean()
    if neg.any():
        margin = margin + F.relu(sims[neg] - cfg.neg_margin).pow(2).mean()
    return total + cfg.margin_weight * 10.0 * margin


def train_mini_clap(clips: list[Clip], phrases: dict[str, str], cfg: MiniClapTrainConfig, device: str = "cpu",
                    on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train from in-memory clips; returns the model (eval mode) and training stats."""
    classes = sorted({c.label for c in clips})
    if len(classes) < 2:
        raise ValueError(f"mini CLAP needs clips of at least 2 classes, got {classes}")
    seed = cfg.seed or 0
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        model = MiniClap(cfg, build_vocab(classes, phrases)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
        sampler = BatchSampler(clips, phrases, cfg, rng)
        model.train()
        t0 = time.perf_counter()
        loss_ema = float("nan")
        for step in range(cfg.steps):
            texts, audio, match = sampler.sample(cfg.batch_size)
            a = model.encode_audio(audio.to(device))
            t = model.encode_text(texts)
            loss = clap_loss(t @ a.T, model.logit_scale, match.to(device), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            lv = float(loss.detach())
            loss_ema = lv if step == 0 else 0.95 * loss_ema + 0.05 * lv
            if on_step is not None:
                on_step(step, lv)
            if step % 50 == 0 or step == cfg.steps - 1:
                log.info("step %d/%d loss %.4f (ema %.4f) temp %.4f", step + 1, cfg.steps, lv, loss_ema, float(1 / model.logit_scale.detach().exp()))
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(prev_threads)
    model.eval()
    return TrainResult(model, cfg.steps, seconds, loss_ema, classes)


def zero_shot_top1(model: MiniClap, clips: list[Clip], texts_by_class: dict[str, str], batch: int = 32) -> float:
    """Fraction of clips whose highest-cosine class text is their own class."""
    classes = sorted(texts_by_class)
    with torch.inference_mode():
        t = model.encode_text([texts_by_class[c] for c in classes])
        correct = 0
        for start in range(0, len(clips), batch):
            chunk = clips[start:start + batch]
            n = min(len(c.audio) for c in chunk)
            a = model.encode_audio(torch.from_numpy(np.stack([c.audio[:n] for c in chunk])))
            pred = (a @ t.T).argmax(dim=1).tolist()
            correct += sum(classes[p] == c.label for p, c in zip(pred, chunk))
    return correct / max(len(clips), 1)
