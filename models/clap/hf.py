"""`hf` backend: transformers' `ClapModel` + `ClapProcessor` from a local folder (e.g. `laion/clap-htsat-unfused`
saved with `save_pretrained`, or converted from a laion checkpoint).

Loads with `local_files_only=True`: scoring never reaches a model hub. The folder's feature extractor decides the
rate (48 kHz for the public models) and clip handling: clips longer than its `max_length_s` are cropped by its
`truncation` mode, which for `rand_trunc` is random, so score clips of at most 10 s for reproducible numbers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.clap.base import ClapBackend
from models.clap.checkpoint import CheckpointError


def _features(out: object) -> torch.Tensor:
    """transformers 4 returns a tensor, 5 a `BaseModelOutputWithPooling` whose pooler_output is the projection."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"unexpected ClapModel output {type(out).__name__}")
    return pooled


class HFClap(ClapBackend):
    backend = "hf"

    def __init__(self, checkpoint: str, device: str = "cpu", batch_size: int = 16) -> None:
        super().__init__(checkpoint, device, batch_size)
        folder = Path(checkpoint)
        if not folder.is_dir():
            raise CheckpointError(folder, "hf backend expects a folder with config.json, model weights and the processor files")
        if not (folder / "config.json").is_file():
            raise CheckpointError(folder, "no config.json: not a transformers model folder")
        import transformers
        from transformers import ClapModel, ClapProcessor

        try:
            self.model = ClapModel.from_pretrained(folder, local_files_only=True).to(self.device).eval()
            self.processor = ClapProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(folder, f"cannot load a ClapModel/ClapProcessor: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)
        self._version = f"transformers-{transformers.__version__}"

    def version(self) -> str:
        return self._version

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        inputs = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**inputs))

    def _embed_audio_batch(self, audio: torch.Tensor) -> torch.Tensor:
        feats = self.processor.feature_extractor([a for a in audio.cpu().numpy()], sampling_rate=self.sample_rate, return_tensors="pt")
        kwargs = {"input_features": feats["input_features"].to(self.device)}
        if "is_longer" in feats:
            kwargs["is_longer"] = feats["is_longer"].to(self.device)
        return _features(self.model.get_audio_features(**kwargs))

    def _dim_hint(self) -> int:
        return int(self.model.config.projection_dim)
