"""Adapter for Meta's released SAM Audio Judge (`sam_audio.SAMAudioJudgeModel`, 48 kHz, local folder only).

Used only when the `sam_audio` package is importable and `checkpoint` is a local folder; otherwise construction
raises `BackendUnavailable` with the reason, so callers can fall back to the mini judge. Nothing is ever fetched
from a hub: `from_pretrained` gets a local path and `HF_HUB_OFFLINE=1` is set while loading.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from pathlib import Path

import numpy as np
import torch

from models.judge.checkpoint import file_sha256
from models.judge.features import as_batch, resolve_device

SAM_RATE = 48_000
AXES = ("overall", "recall", "precision", "faithfulness")


class BackendUnavailable(RuntimeError):
    """The requested scorer backend cannot run here (package or checkpoint missing); the message says which."""


def _folder_hash(folder: Path) -> str:
    """Hash of the weight files' hashes (sorted by name) so the score records which release was used."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in {".safetensors", ".bin", ".pt", ".json"}):
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


class SamJudgeScorer:
    """`score(mixtures, outputs, texts, sr) -> {axis: np [N]}` through the released judge."""

    def __init__(self, checkpoint: str, device: str = "auto", batch_size: int = 8):
        if not checkpoint:
            raise BackendUnavailable("judge backend 'sam' needs judge.checkpoint = a local folder with the release")
        folder = Path(checkpoint)
        if not folder.is_dir():
            raise BackendUnavailable(f"{folder}: SAM judge checkpoint folder does not exist")
        try:
            sam_audio = importlib.import_module("sam_audio")
        except ImportError as exc:
            raise BackendUnavailable(f"the 'sam_audio' package is not installed ({exc}); "
                                     "install Meta's sam-audio to use judge backend 'sam'") from exc
        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            self.device = resolve_device(device)
            self.model = sam_audio.SAMAudioJudgeModel.from_pretrained(str(folder)).to(self.device).eval()
            self.processor = sam_audio.SAMAudioJudgeProcessor.from_pretrained(str(folder))
        except Exception as exc:
            raise BackendUnavailable(f"{folder}: could not load the SAM judge ({type(exc).__name__}: {exc})") from exc
        finally:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old
        self.batch_size = batch_size
        try:
            version = importlib.metadata.version("sam_audio")
        except importlib.metadata.PackageNotFoundError:
            version = getattr(sam_audio, "__version__", "unknown")
        self._info = {"backend": "sam", "checkpoint_hash": _folder_hash(folder), "version": f"sam_audio {version}"}

    def info(self) -> dict[str, str]:
        return dict(self._info)

    @torch.inference_mode()
    def score(self, mixtures, outputs, texts: list[str], sr: int, others=None) -> dict[str, np.ndarray]:
        """`others` (the mixture's other labels) is accepted for the scorer interface and not read: SAJ's release was
        trained on the target description alone."""
        mix = as_batch(mixtures, sr, SAM_RATE, "mixtures")
        out = as_batch(outputs, sr, SAM_RATE, "outputs")
        if not (len(mix) == len(out) == len(texts)):
            raise ValueError(f"batch sizes differ: {len(mix)} mixtures, {len(out)} outputs, {len(texts)} texts")
        res: dict[str, list[np.ndarray]] = {a: [] for a in AXES}
        for i in range(0, len(mix), self.batch_size):
            sl = slice(i, i + self.batch_size)
            processed = self.processor(text=list(texts[sl]), input_audio=[torch.from_numpy(a)[None] for a in mix[sl]],
                                       separated_audio=[torch.from_numpy(a)[None] for a in out[sl]],
                                       return_tensors="pt", padding=True, sampling_rate=SAM_RATE)
            pred = self.model(**processed.to(self.device))
            for a in AXES:
                res[a].append(getattr(pred, a).reshape(-1).float().cpu().numpy())
        return {a: np.concatenate(v) for a, v in res.items()}
