"""The CLAP scorer interface, the backend factory and the batch stage.

Every backend embeds texts and audio into one joint space; the agreement score is the cosine of the two
embeddings. The base class owns what is common: batching, resampling audio of any rate to the backend's rate,
input validation, L2 normalisation, and the model identity recorded with every score.
"""
from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np
import torch

from models.clap.config import ClapConfig
from models.scoring import ScoreInfo, as_batch, batched, checkpoint_hash, equal_length_groups, resolve_device


class ClapBackend(abc.ABC):
    """Base of the `mini`, `laion` and `hf` backends: subclasses implement the two `_embed_*_batch` hooks."""

    backend: str = "base"
    sample_rate: int = 48000

    def __init__(self, checkpoint: str | None, device: str = "cpu", batch_size: int = 16) -> None:
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._info: ScoreInfo | None = None

    # -- hooks -----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        """`[B, D]` (any norm) for up to `batch_size` texts."""

    @abc.abstractmethod
    def _embed_audio_batch(self, audio: torch.Tensor) -> torch.Tensor:
        """`[B, D]` for `[B, T]` float32 audio at `self.sample_rate` on `self.device`."""

    def version(self) -> str:
        """Code/library version string recorded with scores."""
        return "unknown"

    # -- public API ------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.embed_text(["probe"]).shape[1])

    def info(self) -> dict[str, str]:
        """`{"backend", "checkpoint_hash", "version"}`: recorded next to every score."""
        if self._info is None:
            self._info = ScoreInfo(self.backend, checkpoint_hash(self.checkpoint), self.version())
        return self._info.as_dict()

    @torch.inference_mode()
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """`[N, D]` float32 L2-normalised text embeddings."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        if not texts:
            return np.zeros((0, self._dim_hint()), dtype=np.float32)
        out = [torch.nn.functional.normalize(self._embed_text_batch(list(chunk)).float(), dim=-1).cpu() for chunk in batched(texts, self.batch_size)]
        return torch.cat(out).numpy()

    @torch.inference_mode()
    def embed_audio(self, audios: np.ndarray | Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """`[N, D]` float32 L2-normalised audio embeddings for `[N, T]` audio at `sample_rate` (resampled here)."""
        arr = as_batch(audios)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if arr.shape[0] == 0:
            return np.zeros((0, self._dim_hint()), dtype=np.float32)
        if arr.shape[1] == 0:
            raise ValueError("audio clips have zero length")
        out = []
        for start in range(0, arr.shape[0], self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(arr[start:start + self.batch_size])).to(self.device)
            if sample_rate != self.sample_rate:
                import torchaudio.functional as AF

                chunk = AF.resample(chunk, sample_rate, self.sample_rate)
            out.append(torch.nn.functional.normalize(self._embed_audio_batch(chunk).float(), dim=-1).cpu())
        return torch.cat(out).numpy()

    def score(self, texts: Sequence[str], audios: np.ndarray | Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """Row-wise cosine CLAP(text_i, audio_i): `[N]` float32 in [-1, 1]."""
        arr = as_batch(audios)
        if len(texts) != arr.shape[0]:
            raise ValueError(f"{len(texts)} texts but {arr.shape[0]} audio clips")
        if arr.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        t = self.embed_text(texts)
        a = self.embed_audio(arr, sample_rate)
        return np.clip((t * a).sum(axis=1), -1.0, 1.0).astype(np.float32)

    def similarity(self, texts: Sequence[str], audios: np.ndarray | Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """All-pairs cosine `[N_texts, N_audio]` (zero-shot classification, retrieval)."""
        return self.embed_text(texts) @ self.embed_audio(audios, sample_rate).T

    def _dim_hint(self) -> int:
        return 0


def build_clap(cfg: ClapConfig) -> ClapBackend:
    """Construct and load the configured backend once (heavy libraries are imported only for that backend)."""
    if cfg.backend == "mini":
        from models.clap.mini import MiniClapScorer

        if not cfg.checkpoint:
            raise ValueError("clap.checkpoint is required for backend 'mini': train one with `stemforge train clap --sources MANIFEST --out CKPT`")
        return MiniClapScorer(cfg.checkpoint, device=cfg.device, batch_size=cfg.batch_size)
    if cfg.backend == "laion":
        from models.clap.laion import LaionClap

        return LaionClap(cfg.checkpoint, device=cfg.device, batch_size=cfg.batch_size, amodel=cfg.laion_amodel, enable_fusion=cfg.laion_enable_fusion)
    if cfg.backend == "hf":
        from models.clap.hf import HFClap

        if not cfg.checkpoint:
            raise ValueError("clap.checkpoint is required for backend 'hf': a local folder with a ClapModel and its processor")
        return HFClap(cfg.checkpoint, device=cfg.device, batch_size=cfg.batch_size)
    raise ValueError(f"unknown CLAP backend {cfg.backend!r}")


class ClapScorer:
    """Batch stage: adds `clap_<audio column>` cosine scores plus the model identity to a columnar batch.

    Follows the stage contract (`setup()`, `__call__(batch) -> batch`, `resources`) without importing `pipelines`
    (models sit below pipelines). Rows of different lengths are scored in equal-length groups, never padded
    (padding changes embeddings).
    """

    name = "clap_scorer"

    def __init__(self, cfg: ClapConfig, text_column: str = "positive_text", audio_columns: Sequence[str] = ("target", "residual"),
                 sample_rate_column: str = "sample_rate") -> None:
        self.cfg = cfg
        self.text_column = text_column
        self.audio_columns = tuple(audio_columns)
        self.sample_rate_column = sample_rate_column
        self.resources = {"cpus": 1, "gpus": 1 if cfg.device.startswith("cuda") else 0, "batch_size": cfg.batch_size}
        self.model: ClapBackend | None = None

    def setup(self) -> None:
        if self.model is None:
            self.model = build_clap(self.cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.setup()
        assert self.model is not None
        texts = list(batch[self.text_column])
        n = len(texts)
        out = dict(batch)
        rates = [int(r) for r in batch[self.sample_rate_column]] if n else []
        for col in self.audio_columns:
            audios = list(batch[col])
            scores = np.full(n, np.nan, dtype=np.float32)
            groups = equal_length_groups([len(a) for a in audios], rates, [t is not None for t in texts])
            for (_, sr), idx in groups.items():
                scores[idx] = self.model.score([texts[i] for i in idx], np.stack([np.asarray(audios[i], np.float32) for i in idx]), sr)
            out[f"clap_{col}"] = scores
        info = self.model.info()
        for key, value in info.items():
            out[f"clap_{key}"] = [value] * n
        return out
