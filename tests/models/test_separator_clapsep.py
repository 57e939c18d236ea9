"""The `clapsep` preset at reduced width: HTSAT encoder frozen + LoRA, FiLM decoder, MaskNet, a real training step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.separator.checkpoint import load_checkpoint
from models.separator.clapsep import LoRALinear, _htsat_module, _audio_cfg, load_clap_audio_weights
from models.separator.config import SeparatorConfig
from models.separator.infer import Separator
from models.separator.presets import build_model, model_hparams
from models.separator.train import train_separator
from separator_data import synthetic_samples

torch.set_num_threads(2)
REDUCED = dict(preset="clapsep", sample_rate=32000, n_fft=1024, hop=320, width=32, clap_embed_dim=16,
               clap_depths=[1, 1, 1, 1], clap_heads=[1, 2, 4, 8], masknet_layers=1, text_encoder="hash:64")


def test_lora_starts_as_identity_and_trains_only_low_rank() -> None:
    base = torch.nn.Linear(8, 12)
    lora = LoRALinear(base, rank=4)
    x = torch.randn(3, 8)
    assert torch.allclose(lora(x), base(x))
    lora(x).sum().backward()
    assert base.weight.grad is None and lora.lora_b.grad is not None


def test_structure_frozen_encoder_and_stft() -> None:
    cfg = SeparatorConfig(**REDUCED)
    model = build_model("clapsep", model_hparams(cfg, 64))
    assert model.n_lora == 2 * sum(cfg.clap_depths)  # qkv + proj of every attention block
    assert model.stft.n_fft == 1024 and model.stft.hop == 320 and model.stft.bins == 513
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable if n.startswith("encoder."))
    assert any(n.startswith("masknet.") for n in trainable) and any(n.startswith("films.") for n in trainable)
    out = model(torch.randn(2, 32000) * 0.1, torch.randn(2, 64), torch.zeros(2, 64))
    assert out.estimate.shape == (2, 32000) and out.mask.shape[1] == 513
    # 10 s at 32 kHz with hop 320 gives the paper's 1001 frames x 513 bins
    assert model.stft(torch.zeros(1, 320000)).shape == (1, 513, 1001)


def test_training_step_and_checkpoint_round_trip(tmp_path: Path) -> None:
    cfg = SeparatorConfig(**REDUCED, segment_s=1.0, batch_size=2, steps_per_epoch=2, max_steps=2, threads=2)
    samples = list(synthetic_samples(6, sr=32000, seconds=1.0, seed=5, silent_every=3))
    res = train_separator(cfg, [(samples, 1.0)], samples[:2], tmp_path / "run")
    assert res.steps == 2 and torch.isfinite(torch.tensor(res.history[0]["train_loss"]))
    ck = load_checkpoint(res.last)
    assert ck.preset == "clapsep" and ck.hparams["lora_rank"] == 16
    sep = Separator.load(res.last, "cpu", gate_threshold=0.0)
    y = sep.separate(samples[0]["mix"][None], 32000, ["whistle"], ["hiss"])
    assert y.shape == (1, 32000) and bool(torch.isfinite(torch.from_numpy(y)).all())


def test_loads_local_clap_audio_weights(tmp_path: Path) -> None:
    """A 630k-best.pt-style file (state_dict with module.audio_branch.* keys) fills the LoRA-wrapped encoder."""
    htsat = _htsat_module()
    donor = htsat.HTSAT_Swin_Transformer(spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=527, embed_dim=16,
                                         depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=8, config=_audio_cfg())
    state = {f"module.audio_branch.{k}": v for k, v in donor.state_dict().items()}
    state["module.text_branch.dummy"] = torch.zeros(1)
    torch.save({"epoch": 45, "state_dict": state}, tmp_path / "630k-best.pt")
    cfg = SeparatorConfig(**REDUCED, clap_checkpoint=str(tmp_path / "630k-best.pt"))
    model = build_model("clapsep", model_hparams(cfg, 64))
    qkv = model.encoder.layers[0].blocks[0].attn.qkv
    assert isinstance(qkv, LoRALinear)
    assert torch.equal(qkv.base.weight, donor.layers[0].blocks[0].attn.qkv.weight)
    torch.save({"state_dict": {"module.text_branch.x": torch.zeros(1)}}, tmp_path / "text_only.pt")
    with pytest.raises(ValueError, match="text_only.pt.*audio_branch"):
        load_clap_audio_weights(model.encoder, tmp_path / "text_only.pt")
