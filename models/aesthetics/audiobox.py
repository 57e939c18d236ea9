"""audiobox-aesthetics predictor (CE/CU/PC/PQ) from a local checkpoint; we use its PC axis.

Why our own loader: the package's `AesPredictor` picks its device itself, loads with `weights_only=False`, and its
`from_pretrained` path reaches for the hub. We read the same checkpoint format offline:

    {"state_dict": {"model.<AesMultiOutput key>": tensor}, "model_cfg": {proj_num_layer, proj_ln, proj_act_fn,
     proj_dropout, nth_layer, use_weighted_layer_sum, precision, normalize_embed, output_dim, ...},
     "target_transform": {axis: {"mean": float, "std": float}}}

and rebuild the same network (the package's WavLM encoder, mean-pooled over valid frames of a softmax-weighted
layer sum, L2-normalised, one MLP head per axis; outputs de-normalised with `target_transform`). Inference
follows `AesPredictor.forward`: 16 kHz mono, 10 s windows with hop 10 s, zero-padded with a mask, and the
per-window scores averaged with weights = window fill. The WavLM encoder comes from the `audiobox_aesthetics`
package (installed: `audiobox-aesthetics==0.0.4`, adds only `submitit`); without it -> BackendUnavailable.

`wavlm_cfg` (optional, our extension): WavLM size overrides so tests can build a small checkpoint of the same
structure; released checkpoints lack it and get the package's default (WavLM base, 12 layers, 768 dims). Only
numeric sizes are accepted, and `conv_feature_layers` only as a list of integer (dim, kernel, stride) triples that
we format ourselves (WavLM `eval`s that string, so a checkpoint may never supply it as text).
"""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.checkpoint_io import CheckpointError, load_weights, read_checkpoint
from models.judge.checkpoint import file_sha256
from models.judge.features import as_batch, resolve_device
from models.judge.sam_adapter import BackendUnavailable

AXES = ("CE", "CU", "PC", "PQ")
RATE = 16_000
WINDOW_S = 10
CFG_KEYS = ("proj_num_layer", "proj_ln", "proj_act_fn", "proj_dropout", "nth_layer", "use_weighted_layer_sum",
            "precision", "normalize_embed", "output_dim")
NUMERIC_WAVLM_KEYS = {"encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
                      "conv_pos", "conv_pos_groups", "num_buckets", "max_distance"}


def _package():
    try:
        from audiobox_aesthetics.model import aes, utils, wavlm  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"PC backend 'audiobox' needs the audiobox-aesthetics package ({exc})") from exc
    return aes, utils, wavlm


class AesNet(nn.Module):
    """Same parameter names and computation as `audiobox_aesthetics.model.aes.AesMultiOutput`."""

    def __init__(self, model_cfg: dict[str, Any], wavlm_overrides: dict[str, Any] | None = None):
        super().__init__()
        aes, utils, wavlm = _package()
        base = dict(aes.DEFAULT_AUDIO_CFG.__dict__)
        base.update(wavlm_overrides or {})
        self.wavlm_model = wavlm.WavLM(wavlm.WavLMConfig(base))
        dim = self.wavlm_model.cfg.encoder_embed_dim
        self.nth_layer = int(model_cfg["nth_layer"])
        self.use_weighted_layer_sum = bool(model_cfg["use_weighted_layer_sum"])
        self.normalize_embed = bool(model_cfg["normalize_embed"])
        self.proj_layer = nn.ModuleDict({
            a: nn.Sequential(*utils.create_mlp_block(dim, int(model_cfg["output_dim"]), int(model_cfg["proj_num_layer"]),
                                                     model_cfg["proj_act_fn"], bool(model_cfg["proj_ln"]),
                                                     dropout=float(model_cfg["proj_dropout"])))
            for a in AXES})
        if self.use_weighted_layer_sum:
            self.layer_weights = nn.ParameterDict({a: nn.Parameter(torch.ones(self.nth_layer) / self.nth_layer) for a in AXES})

    def forward(self, wav: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """`wav` `[B, T]`, `mask` `[B, T]` True on real samples."""
        (_, layers), pad = self.wavlm_model.extract_features(source=wav, padding_mask=~mask, output_layer=self.nth_layer,
                                                             ret_layer_results=True)
        stacked = torch.stack([g[0] for g in layers], dim=-1)  # T B C L
        keep = (~pad).unsqueeze(-1).type_as(stacked)
        preds = {}
        for a in AXES:
            if self.use_weighted_layer_sum:
                emb = torch.einsum("tbcl,l->btc", stacked, torch.softmax(self.layer_weights[a], dim=-1))
            else:
                emb = stacked[..., -1].transpose(0, 1)
            emb = (emb * keep).sum(1) / keep.sum(1).clamp(min=1)
            if self.normalize_embed:
                emb = nn.functional.normalize(emb, dim=-1)
            preds[a] = self.proj_layer[a](emb).squeeze(-1)
        return preds


def load_audiobox(path: str | Path, trust: bool = False) -> tuple[AesNet, dict[str, dict[str, float]], str]:
    """-> (network in eval mode on CPU, target_transform, sha256). Clear errors for foreign/corrupt files.

    Loads with `weights_only=True`; `trust=True` (config `pc.trust_checkpoint`) allows full unpickling for a
    trusted release whose metadata is not weights-only loadable: the project's one such exception
    (docs/SECURITY.md)."""
    path = Path(path)
    ckpt = read_checkpoint(path, "audiobox-aesthetics", trust=trust,
                           unsafe_hint="; if this is the official release from a trusted source, set "
                                       "pc.trust_checkpoint=true (full unpickling: docs/SECURITY.md)")
    if not isinstance(ckpt, dict) or not {"state_dict", "model_cfg", "target_transform"} <= set(ckpt):
        raise CheckpointError(path, "not an audiobox-aesthetics checkpoint (needs state_dict, model_cfg, target_transform)")
    cfg, tt = ckpt["model_cfg"], ckpt["target_transform"]
    if not isinstance(cfg, dict) or not isinstance(tt, dict) or not all(isinstance(v, dict) for v in tt.values()):
        raise CheckpointError(path, "audiobox-aesthetics model_cfg and target_transform must be mappings")
    missing = [k for k in CFG_KEYS if k not in cfg] + [a for a in AXES if a not in tt]
    if missing:
        raise CheckpointError(path, f"audiobox-aesthetics checkpoint lacks {missing}")
    if not isinstance(ckpt.get("wavlm_cfg") or {}, dict):
        raise CheckpointError(path, "audiobox-aesthetics wavlm_cfg must be a mapping of numeric sizes")
    overrides = dict(ckpt.get("wavlm_cfg") or {})
    conv = overrides.pop("conv_feature_layers", None)
    bad = [k for k, v in overrides.items() if k not in NUMERIC_WAVLM_KEYS or not isinstance(v, (int, float))]
    if conv is not None:
        ok = isinstance(conv, (list, tuple)) and conv and all(
            isinstance(t, (list, tuple)) and len(t) == 3 and all(isinstance(v, int) and v > 0 for v in t) for t in conv)
        if not ok:
            bad.append("conv_feature_layers")
        else:
            overrides["conv_feature_layers"] = repr([tuple(int(v) for v in t) for t in conv])
    if bad:
        raise CheckpointError(path, f"wavlm_cfg may only set numeric sizes {sorted(NUMERIC_WAVLM_KEYS)} and "
                                    f"conv_feature_layers as integer triples; got {bad}")
    net = AesNet(cfg, overrides)
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(path, "audiobox-aesthetics state_dict is not a mapping of tensors")
    state = {re.sub(r"^model\.", "", str(k)): v for k, v in ckpt["state_dict"].items()}
    load_weights(net, state, path, "audiobox-aesthetics network")
    transform = {a: {"mean": float(tt[a]["mean"]), "std": float(tt[a]["std"])} for a in AXES}
    return net.eval(), transform, file_sha256(path)


class AudioboxPCScorer:
    """`score(audios, sr) -> np [N]` = audiobox PC; `score_all` gives the four axes."""

    def __init__(self, checkpoint: str, device: str = "auto", batch_size: int = 16, trust: bool = False):
        if not checkpoint:
            raise BackendUnavailable("PC backend 'audiobox' needs pc.checkpoint = a local audiobox-aesthetics checkpoint")
        self.net, self.transform, sha = load_audiobox(checkpoint, trust)
        self.device = resolve_device(device)
        self.net.to(self.device)
        self.batch_size = batch_size
        try:
            version = importlib.metadata.version("audiobox-aesthetics")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        self._info = {"backend": "audiobox", "checkpoint_hash": sha, "version": f"audiobox-aesthetics {version}"}

    def info(self) -> dict[str, str]:
        return dict(self._info)

    @torch.inference_mode()
    def score_all(self, audios, sr: int) -> dict[str, np.ndarray]:
        wavs = as_batch(audios, sr, RATE, "audios")
        if isinstance(audios, np.ndarray):
            lengths = [wavs.shape[1]] * len(wavs)
        else:  # ragged list: each clip keeps its own length (resampled), padding is masked out
            lengths = [min(wavs.shape[1], int(np.ceil(len(a) * RATE / sr))) for a in audios]
        win = WINDOW_S * RATE
        chunks, masks, weights, owner = [], [], [], []
        for b, (w, n) in enumerate(zip(wavs, lengths)):
            for start in range(0, n, win):
                seg = w[start:min(start + win, n)]
                buf = np.zeros(win, np.float32)
                buf[: len(seg)] = seg
                m = np.zeros(win, bool)
                m[: len(seg)] = True
                chunks.append(buf), masks.append(m), weights.append(len(seg) / win), owner.append(b)
        preds = {a: [] for a in AXES}
        for i in range(0, len(chunks), self.batch_size):
            out = self.net(torch.from_numpy(np.stack(chunks[i:i + self.batch_size])).to(self.device),
                           torch.from_numpy(np.stack(masks[i:i + self.batch_size])).to(self.device))
            for a in AXES:
                preds[a].append(out[a].float().cpu().numpy() * self.transform[a]["std"] + self.transform[a]["mean"])
        weights_a, owner_a = np.asarray(weights), np.asarray(owner)
        result = {}
        for a in AXES:
            p = np.concatenate(preds[a])
            result[a] = np.asarray([np.sum(p[owner_a == b] * weights_a[owner_a == b]) / np.sum(weights_a[owner_a == b])
                                    for b in range(len(wavs))], dtype=np.float32)
        return result

    def score(self, audios, sr: int) -> np.ndarray:
        return self.score_all(audios, sr)["PC"]
