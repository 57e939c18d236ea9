"""audiobox-aesthetics backend: a checkpoint in the release's format (built here, small WavLM sizes) goes
through the real loading code: key renaming, config subset, target de-normalisation, 10 s windowing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.aesthetics import PCConfig, build_pc
from models.aesthetics.audiobox import AXES, CFG_KEYS, AesNet, AudioboxPCScorer
from models.judge.checkpoint import CheckpointError

SMALL_WAVLM = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
               "encoder_attention_heads": 4, "conv_pos": 16, "conv_pos_groups": 4,
               "conv_feature_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2}
MODEL_CFG = {"proj_num_layer": 2, "proj_ln": True, "proj_act_fn": "gelu", "proj_dropout": 0.0, "nth_layer": 3,
             "use_weighted_layer_sum": True, "precision": "32", "normalize_embed": True, "output_dim": 1,
             "extra_training_field": 1}


def write_release_style(path: Path, transform: dict, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    small = {**SMALL_WAVLM, "conv_feature_layers": repr([tuple(t) for t in SMALL_WAVLM["conv_feature_layers"]])}
    net = AesNet(MODEL_CFG, small)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "model_cfg": MODEL_CFG, "target_transform": transform,
                "wavlm_cfg": SMALL_WAVLM}, path)
    return path


def test_same_parameters_and_outputs_as_the_package_model(monkeypatch: pytest.MonkeyPatch,
                                                           rng: np.random.Generator) -> None:
    """Our re-built network must accept the release's state dict and compute what AesMultiOutput computes.

    The package model is built at the same small WavLM size by pointing its default encoder config at it."""
    from audiobox_aesthetics.model import aes, wavlm

    torch.set_num_threads(1)
    base = dict(aes.DEFAULT_AUDIO_CFG.__dict__)
    small = {**SMALL_WAVLM, "conv_feature_layers": repr([tuple(t) for t in SMALL_WAVLM["conv_feature_layers"]])}
    monkeypatch.setattr(aes, "DEFAULT_AUDIO_CFG", wavlm.WavLMConfig({**base, **small}))
    torch.manual_seed(0)
    theirs = aes.AesMultiOutput(**{k: MODEL_CFG[k] for k in CFG_KEYS}).eval()
    ours = AesNet(MODEL_CFG, small).eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    wav = torch.from_numpy((0.1 * rng.standard_normal((2, 16000))).astype(np.float32))
    mask = torch.ones_like(wav, dtype=torch.bool)
    mask[1, 12000:] = False
    with torch.no_grad():
        ref = theirs({"wav": wav[:, None], "mask": mask[:, None]})
        got = ours(wav, mask)
    for a in AXES:
        assert torch.allclose(ref[a], got[a], atol=1e-5)


def test_scores_denormalise_and_average_windows(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.set_num_threads(1)
    unit = {a: {"mean": 0.0, "std": 1.0} for a in AXES}
    shifted = {a: {"mean": 5.0, "std": 2.0} for a in AXES}
    p1 = write_release_style(tmp_path / "a.pth", unit)
    p2 = write_release_style(tmp_path / "b.pth", shifted)
    s1 = build_pc(PCConfig(backend="audiobox", checkpoint=str(p1), device="cpu"))
    s2 = AudioboxPCScorer(str(p2), "cpu")
    assert s1.info()["backend"] == "audiobox" and s1.info()["checkpoint_hash"] != s2.info()["checkpoint_hash"]
    x = (0.1 * rng.standard_normal((2, 16000 * 3))).astype(np.float32)
    a1, a2 = s1.score_all(x, 16000), s2.score_all(x, 16000)
    for a in AXES:
        assert np.allclose(a2[a], 2.0 * a1[a] + 5.0, atol=1e-4)
    assert np.allclose(s1.score(x, 16000), a1["PC"])
    # a 12 s clip = a full 10 s window + a 2 s window weighted 0.2, as AesPredictor does
    long = (0.1 * rng.standard_normal(16000 * 12)).astype(np.float32)
    whole = s1.score_all([long], 16000)["PC"][0]
    first = s1.score_all([long[:160000]], 16000)["PC"][0]
    tail = s1.score_all([long[160000:]], 16000)["PC"][0]
    assert whole == pytest.approx((first * 1.0 + tail * 0.2) / 1.2, abs=1e-4)
    # resampling: 32 kHz input of the same signal scores close to the 16 kHz one
    from storage.audio import resample
    up = resample(x, 16000, 32000)
    assert np.allclose(s1.score(up, 32000), a1["PC"], atol=0.05)


def test_foreign_and_unsafe_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        AudioboxPCScorer(str(tmp_path / "none.pth"), "cpu")
    torch.save({"state_dict": {}}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="partial.pth: not an audiobox-aesthetics checkpoint"):
        AudioboxPCScorer(str(tmp_path / "partial.pth"), "cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable audiobox-aesthetics checkpoint"):
        AudioboxPCScorer(str(tmp_path / "junk.pth"), "cpu")
    unit = {a: {"mean": 0.0, "std": 1.0} for a in AXES}
    torch.save({"state_dict": {}, "model_cfg": MODEL_CFG, "target_transform": unit,
                "wavlm_cfg": {"conv_feature_layers": "[(512,10,5)]"}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="wavlm_cfg may only set numeric sizes"):
        AudioboxPCScorer(str(tmp_path / "evil.pth"), "cpu")
    torch.save({"state_dict": {"model.bogus": torch.zeros(1)}, "model_cfg": MODEL_CFG, "target_transform": unit,
                "wavlm_cfg": SMALL_WAVLM}, tmp_path / "keys.pth")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        AudioboxPCScorer(str(tmp_path / "keys.pth"), "cpu")
