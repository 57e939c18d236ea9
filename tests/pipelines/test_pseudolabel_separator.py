"""Pseudo-labeling through the executor (stage specs, a candidates sink) with a real separator checkpoint
(models.separator), filters and table.

The checkpoint's mask is forced to 1, so every query returns the whole scene: with m labels the remix is m x the
scene and Re-SDR must be exactly -20 log10(m - 1) dB. That pins down the decomposition (m queries, one track
each), the remix scoring and the scene-level filter decision, end to end through real components.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.executors import StageSpec, Task
from engine.executors.inprocess import InProcessExecutor
from engine.resources import Resources
from engine.sinks import CandidatesSink, read_kept_audio
from models.separator.checkpoint import Checkpoint, save_checkpoint, trainable_state
from models.separator.config import SeparatorConfig
from models.separator.infer import Separator
from models.separator.presets import build_model, model_hparams
from pipelines.filters import DECISION_STAGES, FINAL_DECISION, FilterConfig
from pipelines.filters.table import read_candidates
from pipelines.pseudolabel.config import PseudoLabelConfig
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
    fcfg = FilterConfig(clap_target_enabled=False, clap_residual_enabled=False, pc_enabled=False, judge_enabled=False,
                        itt_min_db=-3.0, sst_min_db=-2.0)  # keep the 2-track scene: its targets reach the kept audio
    model = Resources(kind="actor", batch_size=2)
    specs = [StageSpec.of("pipelines.pseudolabel.stages:LoadScenes", audio=AudioConfig(sample_rate=SR)),
             StageSpec.of("pipelines.pseudolabel.stages:PseudoLabel", cfg=PseudoLabelConfig(window_s=0.6, overlap_s=0.1),
                          separator={"checkpoint": str(ckpt)}).with_resources(model),
             StageSpec.of("pipelines.filters.silence:SilenceScoring", cfg=fcfg),
             *[StageSpec.of(p, cfg=fcfg) for p in DECISION_STAGES], StageSpec.of(FINAL_DECISION)]
    task = Task("b0", {"scene_id": ["s0", "s1", "s2"], "path": paths, "event_labels": labels})
    sink = CandidatesSink(str(tmp_path / "filter"))
    summary = InProcessExecutor().run(specs, [task], sink)
    out = read_candidates(sink.table_dir)
    assert list(out["scene_id"]) == ["s0", "s0", "s0", "s1", "s1"]  # s2 has one event: skipped, and counted
    assert summary.counts == {"scenes_skipped_min_events": 1}
    assert list(out["negative_labels"][0]) == ["siren", "rain"]
    assert out["re_sdr_db"][0] == pytest.approx(-20 * np.log10(2), abs=0.05)  # 3 tracks: remix = 3 x scene
    assert out["re_sdr_db"][3] == pytest.approx(0.0, abs=0.05)                 # 2 tracks: remix = 2 x scene
    assert list(out["keep"]) == [False] * 3 + [True] * 2 and set(out["reason"][:3]) == {"re_sdr_below_itt"}
    kept = read_kept_audio(sink.root)
    assert sorted(kept) == ["s1-q00", "s1-q01"]
    from storage.audio import decode_audio, load_audio

    target, sr = decode_audio(kept["s1-q00"][0])
    np.testing.assert_allclose(target, load_audio(paths[1], AudioConfig(sample_rate=SR)), atol=2e-3)  # identity mask
    stats = {s["name"]: s for s in summary.stages}
    assert stats["pseudo_label"]["rows_in"] == 3 and stats["pseudo_label"]["rows_out"] == 5
    assert stats["pseudo_label"]["batches"] == 2  # batch size 2 from its resources
