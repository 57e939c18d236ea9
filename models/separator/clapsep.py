"""`clapsep`: the ClearSep / CLAPSep separator built on the CLAP HTSAT audio encoder.

- Encoder: laion_clap's HTSAT Swin transformer (frozen) with LoRA rank 16 on every attention's fused q/k/v
  projection and its output projection. It sees the mixture as CLAP does: 48 kHz, 64 log-mel bins, hop 480.
- Decoder: the per-stage encoder outputs, unfolded back into time order and pooled over frequency, form a U-Net
  style pyramid; the decoder upsamples from the deepest stage, adds each skip, and FiLM-conditions every level on
  the projected `[Qp; Qn]` query (``gamma(Q) H + beta(Q)``).
- MaskNet: 3 transformer layers over `[decoder feature; projected linear magnitude]` per STFT frame, a sigmoid
  mask per bin of the 1024/320 STFT at 32 kHz, mixture phase, iSTFT.

Deviation from CLAPSep, stated: CLAPSep's decoder keeps a frequency axis (2-D skips); here the skips are pooled over
frequency and the frequency resolution comes from the magnitude branch of the MaskNet. This keeps the model
trainable on a CPU at reduced width while preserving the encoder / LoRA / FiLM / MaskNet structure.

`import laion_clap` contacts the model hub at import time, so the HTSAT module is loaded from its file under a
private package name without running laion_clap's `__init__`. Real CLAP weights come from a local
`630k-best.pt`-style checkpoint (`clap_checkpoint`); nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import nn

from models.separator.base import SeparatorOutput, rms_normalise
from models.separator.film import FiLM, query_vector
from models.separator.stft import STFT

_PKG = "_stemforge_laion_htsat"


def _htsat_module() -> types.ModuleType:
    """Load laion_clap/clap_module/htsat.py (and its relative imports) without importing laion_clap itself."""
    name = f"{_PKG}.htsat"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("laion_clap is not installed; the clapsep preset needs its HTSAT model code")
    root = Path(list(spec.submodule_search_locations)[0]) / "clap_module"
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = [str(root)]  # type: ignore[attr-defined]
    sys.modules[_PKG] = pkg
    mspec = importlib.util.spec_from_file_location(name, root / "htsat.py")
    module = importlib.util.module_from_spec(mspec)  # type: ignore[arg-type]
    sys.modules[name] = module
    mspec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update ``W x + (alpha / r) B A x`` (Hu et al. 2021).
    B starts at zero, so the wrapped layer initially computes exactly what the pretrained one did."""

    def __init__(self, base: nn.Linear, rank: int = 16, alpha: float = 16.0):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def add_lora(module: nn.Module, rank: int, alpha: float) -> int:
    """Wrap `qkv` and `proj` of every HTSAT WindowAttention; returns how many layers were wrapped."""
    count = 0
    for sub in module.modules():
        if type(sub).__name__ == "WindowAttention":
            sub.qkv = LoRALinear(sub.qkv, rank, alpha)
            sub.proj = LoRALinear(sub.proj, rank, alpha)
            count += 2
    return count


@dataclass
class ClapSepConfig:
    """Constructor arguments of `ClapSeparator` (recorded in checkpoints). `full()` is the paper's size."""

    query_dim: int = 512
    sample_rate: int = 32000
    n_fft: int = 1024
    hop: int = 320
    embed_dim: int = 96                  # HTSAT-tiny (CLAP 630k checkpoints)
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    lora_rank: int = 16
    lora_alpha: float = 16.0
    width: int = 256                     # decoder / MaskNet width
    masknet_layers: int = 3
    masknet_heads: int = 8
    presence_gate: bool = True
    clap_checkpoint: str | None = None   # local 630k-best.pt; None = random encoder (tests)

    @classmethod
    def full(cls, query_dim: int, presence_gate: bool = True, clap_checkpoint: str | None = None) -> "ClapSepConfig":
        return cls(query_dim=query_dim, presence_gate=presence_gate, clap_checkpoint=clap_checkpoint)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _audio_cfg() -> types.SimpleNamespace:
    # CLAP's HTSAT audio front end (laion_clap model_configs HTSAT-tiny.json)
    return types.SimpleNamespace(model_name="tiny", sample_rate=48000, window_size=1024, hop_size=480, mel_bins=64,
                                 fmin=50, fmax=14000, class_num=527, clip_samples=480000)


def load_clap_audio_weights(encoder: nn.Module, path: str | Path) -> None:
    """Copy the audio branch of a LAION-CLAP checkpoint (630k-best.pt format) into `encoder`."""
    from models.clap.laion import read_laion_state_dict  # the CLAP backend's safe (weights_only) reader

    path = Path(path)
    state = read_laion_state_dict(path)  # `module.` already stripped, checked to hold audio and text branches
    audio = {k[len("audio_branch."):]: v for k, v in state.items() if k.startswith("audio_branch.")}
    if not audio:
        raise ValueError(f"{path}: no audio_branch.* weights found")
    own = encoder.state_dict()
    mapped = {}
    for k, v in audio.items():  # LoRA wrapping moved qkv/proj weights under `.base`
        for cand in (k, k.replace(".qkv.", ".qkv.base.").replace(".proj.", ".proj.base.")):
            if cand in own and own[cand].shape == v.shape:
                mapped[cand] = v
                break
    missing = [k for k in own if k not in mapped and "lora_" not in k and "num_batches_tracked" not in k]
    if len(mapped) < len(audio) * 0.9 or missing:
        raise ValueError(f"{path}: audio branch does not match HTSAT-tiny ({len(mapped)}/{len(audio)} tensors "
                         f"matched, missing e.g. {missing[:3]})")
    encoder.load_state_dict(mapped, strict=False)


class ClapSeparator(nn.Module):
    preset = "clapsep"

    def __init__(self, cfg: ClapSepConfig):
        super().__init__()
        self.cfg = cfg
        self.hparams = cfg.as_dict()
        self.sample_rate = cfg.sample_rate
        htsat = _htsat_module()
        self.encoder = htsat.HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=527, embed_dim=cfg.embed_dim,
            depths=list(cfg.depths), num_heads=list(cfg.num_heads), window_size=8, config=_audio_cfg())
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.n_lora = add_lora(self.encoder, cfg.lora_rank, cfg.lora_alpha)
        if cfg.clap_checkpoint:
            load_clap_audio_weights(self.encoder, cfg.clap_checkpoint)
        self.stft = STFT(cfg.n_fft, cfg.hop)
        w = cfg.width
        stage_dims = [cfg.embed_dim * 2 ** min(i + 1, len(cfg.depths) - 1) for i in range(len(cfg.depths))]
        self.skips = nn.ModuleList([nn.Conv1d(d, w, 1) for d in stage_dims])
        self.query = nn.Sequential(nn.Linear(2 * cfg.query_dim, w), nn.GELU(), nn.Linear(w, w))
        self.films = nn.ModuleList([FiLM(w, w) for _ in stage_dims])
        self.ups = nn.ModuleList([nn.Sequential(nn.Conv1d(w, w, 3, padding=1), nn.GELU()) for _ in stage_dims])
        self.mag_proj = nn.Linear(self.stft.bins, w)
        layer = nn.TransformerEncoderLayer(2 * w, cfg.masknet_heads, 4 * w, dropout=0.0, batch_first=True, norm_first=True)
        self.masknet = nn.TransformerEncoder(layer, cfg.masknet_layers, enable_nested_tensor=False)
        self.mask_head = nn.Linear(2 * w, self.stft.bins)
        self.gate = nn.Sequential(nn.Linear(2 * w, w), nn.GELU(), nn.Linear(w, 1)) if cfg.presence_gate else None

    def train(self, mode: bool = True) -> "ClapSeparator":
        super().train(mode)
        self.encoder.eval()  # frozen encoder: BatchNorm statistics and dropout stay in inference mode
        return self

    def _encoder_stages(self, mix: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage HTSAT features as time sequences `[B, C_i, T_i]` (deepest last)."""
        enc = self.encoder
        wav48 = torchaudio.functional.resample(mix, self.sample_rate, 48000)
        x = enc.spectrogram_extractor(wav48)          # [B, 1, T, F]
        x = enc.logmel_extractor(x)
        x = enc.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = enc.reshape_wav2img(x)                      # [B, 1, 256, 256], time folded into freq_ratio rows
        frames = x.shape[2]
        x = enc.pos_drop(enc.patch_embed(x))
        stages = []
        for i, layer in enumerate(enc.layers):
            x, _ = layer(x)
            b, n, c = x.shape
            side = int(math.isqrt(n))
            grid = x.transpose(1, 2).reshape(b, c, side, side)          # rows: (time chunk, freq), cols: time
            c_freq = side // enc.freq_ratio
            grid = grid.reshape(b, c, enc.freq_ratio, c_freq, side).permute(0, 1, 3, 2, 4).reshape(b, c, c_freq, -1)
            stages.append(grid.mean(2))                                  # [B, C, freq_ratio * side], time order
        del frames
        return stages

    def forward(self, mix: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> SeparatorOutput:
        spec = self.stft(mix)                                            # [B, F, N]
        n_frames = spec.shape[-1]
        q = self.query(query_vector(positive, negative))
        with torch.no_grad() if not any(p.requires_grad for p in self.encoder.parameters()) else torch.enable_grad():
            stages = self._encoder_stages(rms_normalise(mix))
        h = None
        for i in reversed(range(len(stages))):
            skip = self.skips[i](stages[i])
            if h is not None:
                h = nn.functional.interpolate(h, size=skip.shape[-1], mode="linear", align_corners=False)
                skip = skip + h
            h = self.ups[i](self.films[i](skip, q))
        h = nn.functional.interpolate(h, size=n_frames, mode="linear", align_corners=False)   # [B, W, N]
        mag = self.mag_proj(torch.log(self.stft(rms_normalise(mix)).abs() + 1e-3).transpose(1, 2))  # [B, N, W]
        z = self.masknet(torch.cat([h.transpose(1, 2), mag], dim=-1))
        mask = torch.sigmoid(self.mask_head(z)).transpose(1, 2).float()
        gate_logit = None
        if self.gate is not None:
            gate_logit = self.gate(torch.cat([z.mean(1)[:, : self.cfg.width], q], dim=-1)).squeeze(-1).float()
        return SeparatorOutput(self.stft.inverse(spec * mask, mix.shape[-1]), gate_logit, mask)
