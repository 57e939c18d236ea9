"""Track-level silence filter (SAM Audio Table 3): drop targets that are silent for >= 95% of their duration.

Silence is measured like the span VAD (pydub, -40 dBFS) but on fixed 10 ms frames with numpy: frame RMS in dBFS
below `silence_threshold_dbfs` is silent. This is a pure function of the audio, so the stage needs no model and
costs O(T); pydub's detect_nonsilent costs O(T x min_silence_len) (seed facts §7).
"""
from __future__ import annotations

import numpy as np

from pipelines.filters.config import FilterConfig
from pipelines.filters.rules import DecisionStage, Rule, as_filter_config
from pipelines.stage import BaseStage, Batch, batch_len


def silence_ratio(audio: np.ndarray, sample_rate: int, threshold_dbfs: float = -40.0, frame_ms: float = 10.0) -> float:
    """Share of frames whose RMS (dBFS, full scale = 1.0) is below the threshold; an empty signal is all silent."""
    a = np.asarray(audio, dtype=np.float64)
    frame = max(1, int(round(sample_rate * frame_ms / 1000.0)))
    n_frames = len(a) // frame
    if n_frames == 0:
        return 1.0
    frames = a[: n_frames * frame].reshape(n_frames, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    db = 20.0 * np.log10(np.maximum(rms, 1e-12))
    return float(np.mean(db < threshold_dbfs))


class SilenceScoring(BaseStage):
    """Adds `silence_ratio` of the target (0..1)."""

    name = "score_silence"
    inputs = ("target", "sample_rate")
    outputs = ("silence_ratio",)

    def __init__(self, cfg: FilterConfig | dict) -> None:
        super().__init__()
        self.cfg = as_filter_config(cfg)

    def __call__(self, batch: Batch) -> Batch:
        n = batch_len(batch)
        ratios = np.array([
            silence_ratio(batch["target"][i], int(batch["sample_rate"][i]), self.cfg.silence_threshold_dbfs, self.cfg.silence_frame_ms)
            for i in range(n)
        ], dtype=np.float64)
        return {**batch, "silence_ratio": ratios}


def silence_rules(cfg: FilterConfig) -> list[Rule]:
    return [Rule("silence", "silence_ratio", "<", cfg.silence_ratio_max, "mostly_silent", enabled=cfg.silence_enabled)]


def SilenceDecision(cfg: FilterConfig | dict) -> DecisionStage:
    return DecisionStage("decide_silence", silence_rules(as_filter_config(cfg)))
