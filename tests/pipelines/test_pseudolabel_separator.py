"""Pseudo-labeling through the executor with a real separator checkpoint (models.separator), filters and table.

The checkpoint's mask is forced to 1, so every query returns the whole scene: with m labels the remix is m x the
scene and Re-SDR must be exactly -20 log10(m - 1) dB. That pins down the decomposition (m queries, one track
each), the remix scoring and the scene-level filter decision, end to end through real components.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.executor import InProcessExecutor
from models.separator.checkpoint import Checkpoint, save_checkpoint, trainable_state
from models.separator.config import SeparatorConfig
from models.separator.infer import Separator
from models.separator.presets import build_model, model_hparams
from pipelines.filters import FilterConfig, SilenceScoring, decision_stages
from pipelines.filters.table import read_candidates, write_candidates
from pipelines.pseudolabel.config import PseudoLabelConfig
from pipelines.pseudolabel.stages import LoadScenes, PseudoLabel
from storage.audio import AudioConfig, write_audio

torch.set_num_threads(1)
SR = 16000


def _identity_checkpoint(path):
    cfg = SeparatorConfig(width=32, presence_gate=False, segment_s=0.5)
    model = build_model("tiny", model_hparams(cfg, 32))
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.fill_(30.0)
    save_checkpoint(path, Checkpoint("tiny", model.hparams, trainable_state(model), "hash:32", cfg.model_dump()))
    return path


def test_decomposition_with_real_separator_through_executor(tmp_path):
    ckpt = _identity_checkpoint(tmp_path / "ones.pt")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"scene{i}.flac"
        write_audio(p, (0.1 * rng.standard_normal(int(1.3 * SR))).astype(np.float32), SR)
        paths.append(str(p))
    labels = [["dog", "siren", "rain"], ["piano", "bird"], ["clock"]]
    fcfg = FilterConfig(clap_target_enabled=False, clap_residual_enabled=False, pc_enabled=False, judge_enabled=False)
    pl = PseudoLabel(PseudoLabelConfig(window_s=0.6, overlap_s=0.1), separator_factory=lambda: Separator.load(ckpt, "cpu"))
    stages = [LoadScenes(AudioConfig(sample_rate=SR)), pl, SilenceScoring(fcfg), *decision_stages(fcfg)]
    batch = {"scene_id": ["s0", "s1", "s2"], "path": paths, "event_labels": labels}
    result = InProcessExecutor({"pseudo_label": 2}).run(stages, [("b0", batch)], work_dir=tmp_path / "work")
    out = result.merged()
    assert out["scene_id"] == ["s0", "s0", "s0", "s1", "s1"]  # s2 has one event: skipped, and counted
    assert pl.ledger.skipped == ["s2"]
    assert out["negative_labels"][0] == ["siren", "rain"]
    for i in range(5):
        scene = out["mixture"][i]
        np.testing.assert_allclose(out["target"][i], scene, atol=2e-3)  # identity mask returns the scene
        assert np.abs(out["residual"][i]).max() < 5e-3
    assert out["re_sdr_db"][0] == pytest.approx(-20 * np.log10(2), abs=0.05)  # 3 tracks: remix = 3 x scene
    assert out["re_sdr_db"][3] == pytest.approx(0.0, abs=0.05)                 # 2 tracks: remix = 2 x scene
    assert not out["keep"].any() and set(out["reason"]) == {"re_sdr_below_itt"}
    table = read_candidates(write_candidates(tmp_path / "c.parquet", out))
    assert len(table["candidate_id"]) == 5 and not table["keep"].any()
    stats = {s["name"]: s for s in result.stats_table()}
    assert stats["pseudo_label"]["items_in"] == 3 and stats["pseudo_label"]["items_out"] == 5
