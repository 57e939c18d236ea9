"""`laion` backend: laion-clap's `CLAP_Module` (HTSAT-tiny or -base + RoBERTa) with a local checkpoint.

Offline use: laion-clap builds its text tower with `RobertaModel.from_pretrained("roberta-base")` and its tokenizer
from the same name, so the user's Hugging Face cache (HF_HOME) must already hold roberta-base; set
HF_HUB_OFFLINE=1 so nothing is fetched. The checkpoint (e.g. `630k-best.pt`) is never downloaded here.

Why we load the checkpoint ourselves instead of `CLAP_Module.load_ckpt`: laion's loader calls
`torch.load(weights_only=False)` (arbitrary pickle execution) and unconditionally deletes
`text_branch.embeddings.position_ids` (a KeyError for state dicts saved by recent transformers). We load with
`weights_only=True`, apply the same key clean-up (strip `module.`, drop `position_ids` when present) and load
strictly into `CLAP_Module.model`, so a checkpoint for another architecture fails with a clear message.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from models.clap.base import ClapBackend
from models.checkpoint_io import CheckpointError, read_checkpoint


def read_laion_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model state dict of a laion-clap checkpoint, loaded with `weights_only=True`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "laion-clap checkpoint not found (download e.g. 630k-best.pt yourself; nothing is fetched at run time)")
    data = read_checkpoint(p, "laion-clap")
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(p, "not a laion-clap checkpoint: expected a state dict of tensors (optionally under 'state_dict')")
    if next(iter(state)).startswith("module."):
        state = {k[len("module."):]: v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)
    if not any(k.startswith("audio_branch.") for k in state) or not any(k.startswith("text_branch.") for k in state):
        raise CheckpointError(p, "not a laion-clap checkpoint: no audio_branch/text_branch weights")
    return state


class LaionClap(ClapBackend):
    backend = "laion"
    sample_rate = 48000

    def __init__(self, checkpoint: str | None, device: str = "cpu", batch_size: int = 16, amodel: str = "HTSAT-tiny",
                 enable_fusion: bool = False) -> None:
        if not checkpoint:
            raise ValueError("clap.checkpoint is required for backend 'laion': a local laion-clap checkpoint such as 630k-best.pt")
        super().__init__(checkpoint, device, batch_size)
        state = read_laion_state_dict(checkpoint)  # fail fast, before the slow module build
        try:
            import laion_clap
        except OSError as exc:  # tokenizers fetched at import time and not in the cache
            raise RuntimeError(f"laion-clap could not load its tokenizers offline: {exc}. Populate the Hugging Face cache (HF_HOME) with roberta-base first.") from exc
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                self.module = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device=self.device)
            except OSError as exc:
                raise RuntimeError(f"laion-clap could not build its text tower offline: {exc}. The Hugging Face cache (HF_HOME) must hold roberta-base.") from exc
        missing, unexpected = self._load(state)
        if missing or unexpected:
            raise CheckpointError(checkpoint, f"does not fit laion-clap {amodel} (fusion={enable_fusion}): {len(missing)} missing keys (e.g. {missing[:2]}), "
                                              f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})")
        self.module.eval()
        self.amodel = amodel
        self._version = f"laion_clap-{_dist_version('laion_clap')}/{amodel}{'-fusion' if enable_fusion else ''}"

    def _load(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        model_keys = set(self.module.model.state_dict())
        missing = sorted(k for k in model_keys - set(state) if not k.endswith("position_ids"))
        unexpected = sorted(set(state) - model_keys)
        if missing or unexpected:
            return missing, unexpected
        try:
            self.module.model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatch
            raise CheckpointError(self.checkpoint or "", f"tensor shapes do not fit laion-clap: {str(exc).splitlines()[0]}") from exc
        return [], []

    def version(self) -> str:
        return self._version

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        with contextlib.redirect_stdout(io.StringIO()):
            return self.module.get_text_embedding(texts, use_tensor=True)

    def _embed_audio_batch(self, audio: torch.Tensor) -> torch.Tensor:
        # The numpy path quantises to int16 like laion's reference usage; clips over 10 s are randomly cropped by
        # laion's 'rand_trunc', so score clips of at most 10 s for reproducible numbers.
        x = np.clip(audio.detach().cpu().numpy(), -1.0, 1.0)
        with contextlib.redirect_stdout(io.StringIO()):
            emb = self.module.get_audio_embedding_from_data(x=x, use_tensor=False)
        return torch.from_numpy(np.asarray(emb))

    def _dim_hint(self) -> int:
        return 512


def _dist_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
