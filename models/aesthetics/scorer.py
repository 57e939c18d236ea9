"""The mini PC estimator as a batch scorer, and `build_pc(cfg)` choosing the backend."""
from __future__ import annotations

import numpy as np
import torch

from models.aesthetics.config import PCConfig
from models.aesthetics.mini import MiniPC
from models.aesthetics.train import FORMAT, MODEL_KEYS, VERSION, build_model
from models.judge.checkpoint import load_model
from models.judge.features import as_batch, resolve_device


class MiniPCScorer:
    """`score(audios, sr) -> np [N]` on the 1-10 PC scale (proxy; < 2.5 ~ one clean source)."""

    def __init__(self, checkpoint: str, device: str = "auto", batch_size: int = 16):
        model, payload = load_model(checkpoint, FORMAT, VERSION, MODEL_KEYS, build_model, "pc",
                                    "stemforge train pc --sources MANIFEST --out CKPT", title="PC")
        self.model: MiniPC = model
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.sample_rate = int(payload["config"]["sample_rate"])
        self.batch_size = batch_size
        self._info = {"backend": "mini", "checkpoint_hash": payload["sha256"], "version": f"{FORMAT} v{VERSION}"}

    def info(self) -> dict[str, str]:
        return dict(self._info)

    @torch.inference_mode()
    def score(self, audios, sr: int) -> np.ndarray:
        x = as_batch(audios, sr, self.sample_rate, "audios")
        out = [self.model(torch.from_numpy(x[i:i + self.batch_size]).to(self.device)).float().cpu().numpy()
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out).astype(np.float32)


def build_pc(cfg: PCConfig):
    """Scorer for `cfg.backend`: `mini` -> MiniPCScorer, `audiobox` -> AudioboxPCScorer."""
    if cfg.backend == "mini":
        return MiniPCScorer(cfg.checkpoint, cfg.device, cfg.batch_size)
    if cfg.backend == "audiobox":
        from models.aesthetics.audiobox import AudioboxPCScorer

        return AudioboxPCScorer(cfg.checkpoint, cfg.device, cfg.batch_size, cfg.trust_checkpoint)
    raise ValueError(f"unknown PC backend {cfg.backend!r}")
