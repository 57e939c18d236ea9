"""The mini judge as a batch scorer: load the checkpoint once, score (mixture, output, text) batches."""
from __future__ import annotations

import numpy as np
import torch

from models.judge.checkpoint import load_model
from models.judge.config import JudgeConfig
from models.judge.features import as_batch, resolve_device
from models.judge.model import AXES, MiniJudge
from models.judge.prompt import TEXT_FORMS, compose_texts
from models.judge.train import FORMAT, MODEL_KEYS, VERSION, build_model


class MiniJudgeScorer:
    """`score(mixtures, outputs, texts, sr, others=None) -> {axis: np [N]}` (1-5) with the in-project judge.

    `others`: per item, the other sound labels known to be in the mixture; a judge calibrated on separator outputs
    reads them (`models.judge.prompt`, the checkpoint's `text_form`), any other judge ignores them."""

    def __init__(self, checkpoint: str, device: str = "auto", batch_size: int = 16):
        model, payload = load_model(checkpoint, FORMAT, VERSION, MODEL_KEYS, build_model, "judge",
                                    "stemforge train judge --sources MANIFEST --out CKPT")
        self.model: MiniJudge = model
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.sample_rate = int(payload["config"]["sample_rate"])
        self.batch_size = batch_size
        self.meta = payload.get("meta", {}) or {}
        self.text_form = str(self.meta.get("text_form", "target"))
        if self.text_form not in TEXT_FORMS:
            raise ValueError(f"{checkpoint}: judge text form {self.text_form!r} is not one of {TEXT_FORMS}")
        self._info = {"backend": "mini", "checkpoint_hash": payload["sha256"], "version": f"{FORMAT} v{VERSION}"}

    def info(self) -> dict[str, str]:
        return dict(self._info)

    @torch.inference_mode()
    def score(self, mixtures, outputs, texts: list[str], sr: int, others=None) -> dict[str, np.ndarray]:
        texts = compose_texts(self.text_form, texts, others)
        mix = as_batch(mixtures, sr, self.sample_rate, "mixtures")
        out = as_batch(outputs, sr, self.sample_rate, "outputs")
        if not (len(mix) == len(out) == len(texts)):
            raise ValueError(f"batch sizes differ: {len(mix)} mixtures, {len(out)} outputs, {len(texts)} texts")
        n = max(mix.shape[1], out.shape[1])
        mix = np.pad(mix, ((0, 0), (0, n - mix.shape[1])))
        out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
        preds = []
        for i in range(0, len(mix), self.batch_size):
            p, _ = self.model(torch.from_numpy(mix[i:i + self.batch_size]).to(self.device),
                              torch.from_numpy(out[i:i + self.batch_size]).to(self.device),
                              list(texts[i:i + self.batch_size]))
            preds.append(p.float().cpu().numpy())
        pred = np.concatenate(preds)
        return {a: pred[:, j].astype(np.float32) for j, a in enumerate(AXES)}


def build_judge(cfg: JudgeConfig):
    """Scorer for `cfg.backend`: `mini` -> MiniJudgeScorer, `sam` -> SamJudgeScorer (BackendUnavailable if absent)."""
    if cfg.backend == "mini":
        return MiniJudgeScorer(cfg.checkpoint, cfg.device, cfg.batch_size)
    if cfg.backend == "sam":
        from models.judge.sam_adapter import SamJudgeScorer

        return SamJudgeScorer(cfg.checkpoint, cfg.device, cfg.batch_size)
    raise ValueError(f"unknown judge backend {cfg.backend!r}")
