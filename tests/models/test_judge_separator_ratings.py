"""Separator-proxy judge ratings: the truth mapping is monotone and deterministic, and `calibrate_judge` fine-tunes a
judge on a real (untrained, tiny) separator's outputs for shard tuples into a checkpoint the scorer loads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import signal

from models.judge.config import JudgeConfig
from models.judge.scorer import MiniJudgeScorer
from models.judge.prompt import judge_text
from models.judge.separator_ratings import KINDS, TARGETS, calibrate_judge, other_labels, ratings_from_truth, target_text
from models.judge.train import build_model, save_judge
from separator_data import synthetic_samples, untrained_checkpoint, write_samples

torch.set_num_threads(1)
SR = 16000


def _pair(seed: int = 0, n: int = SR) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    target = (0.1 * np.sin(2 * np.pi * 440 * t) + 0.03 * rng.standard_normal(n)).astype(np.float32)
    residual = (0.1 * rng.standard_normal(n)).astype(np.float32)  # as loud as the target: the mixture leaks 0 dB
    return target, residual


def test_perfect_estimate_rates_five_everywhere() -> None:
    target, residual = _pair()
    r = ratings_from_truth(target, target, residual, SR)
    assert all(v == pytest.approx(5.0, abs=1e-6) for v in r.values()), r


def test_each_flaw_lowers_its_axis() -> None:
    target, residual = _pair()
    mix = target + residual
    r_mix = ratings_from_truth(mix, target, residual, SR)
    assert r_mix["precision"] < 1.5 and r_mix["recall"] > 4.9  # everything kept, everything leaked
    r_sil = ratings_from_truth(np.zeros_like(target), target, residual, SR)
    assert r_sil["recall"] == pytest.approx(1.0) and r_sil["faithfulness"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    distorted = (np.tanh(20 * target) / 20 + 0.05 * rng.standard_normal(len(target))).astype(np.float32)
    r_dist = ratings_from_truth(distorted, target, residual, SR)
    assert r_dist["faithfulness"] < 2.0 and r_dist["recall"] > 4.0
    # missing half of the target: recall falls, the kept half stays faithful
    cut = target.copy()
    cut[: len(cut) // 2] = 0
    r_cut = ratings_from_truth(cut, target, residual, SR)
    assert r_cut["recall"] < 3.0 and r_cut["faithfulness"] > 4.5
    wrong = ratings_from_truth(residual, target, residual, SR)
    assert max(wrong.values()) < 2.5


def test_monotone_in_leak_and_in_sdr() -> None:
    target, residual = _pair()
    leaks = [ratings_from_truth(target + a * residual, target, residual, SR) for a in (0.0, 0.03, 0.1, 0.3, 1.0)]
    prec = [r["precision"] for r in leaks]
    overall = [r["overall"] for r in leaks]
    assert all(a >= b for a, b in zip(prec, prec[1:])) and prec[0] > prec[-1] + 3
    assert all(a >= b for a, b in zip(overall, overall[1:])) and overall[0] > overall[-1] + 2
    # a low-passed estimate loses fidelity (and SDR) as the cut-off falls
    faith = []
    for cutoff in (6000, 2000, 600):
        sos = signal.butter(4, cutoff, fs=SR, output="sos")
        est = (signal.sosfilt(sos, target) + 0.02 * _pair(3)[1]).astype(np.float32)
        faith.append(ratings_from_truth(est, target, residual, SR)["faithfulness"])
    assert faith[0] >= faith[1] >= faith[2]


def test_deterministic_and_bad_input() -> None:
    target, residual = _pair()
    est = target + 0.2 * residual
    assert ratings_from_truth(est, target, residual, SR) == ratings_from_truth(est.copy(), target, residual, SR)
    with pytest.raises(ValueError, match="silent"):
        ratings_from_truth(est, np.zeros_like(target), residual, SR)
    with pytest.raises(ValueError, match="same length"):
        ratings_from_truth(est[:-1], target, residual, SR)


def test_calibrate_judge_writes_loadable_checkpoint(tmp_path: Path) -> None:
    samples = list(synthetic_samples(10, SR, seconds=1.0, seed=3, silent_every=5))
    val = write_samples(tmp_path / "val", samples[:7])
    test = write_samples(tmp_path / "test", samples[7:])
    sep = untrained_checkpoint(tmp_path / "sep.pt", width=16, segment_s=0.5)
    cfg = JudgeConfig(device="cpu", dim=32, heads=2, layers=1, n_mels=32, train_batch=4, clip_seconds=0.5)
    torch.manual_seed(0)
    save_judge(tmp_path / "judge0.pt", build_model(cfg), cfg)
    runs = [calibrate_judge(str(tmp_path / "judge0.pt"), str(sep), [str(val)], cfg, 3, 0, tmp_path / f"j{i}.pt",
                            heldout_dirs=[str(test)]) for i in range(2)]
    a, b = runs
    assert a["checkpoint_hash"] == b["checkpoint_hash"]  # deterministic: same seed and inputs, same weights
    assert a["targets"] == TARGETS and a["steps"] == 3
    assert a["tuples"] == 6  # the silent-target tuple is skipped
    assert a["examples"] >= 6 * (len(KINDS) - 1)
    assert a["test"]["n"] > 0 and np.isfinite(a["test"]["axes"]["overall"]["mae"])
    scorer = MiniJudgeScorer(a["checkpoint"], "cpu")
    assert scorer.meta["targets"] == TARGETS and scorer.meta["separator_sha256"]
    s = samples[0]
    out = scorer.score([s["mix"]], [s["target"]], ["low hum"], SR)
    assert set(out) == {"overall", "recall", "precision", "faithfulness"}
    assert 1.0 <= float(out["overall"][0]) <= 5.0
    # a calibrated judge reads the mixture's other labels (models.judge.prompt), as it was calibrated
    assert scorer.meta["text_form"] == "target+others" and scorer.text_form == "target+others"
    told = scorer.score([s["mix"]] * 2, [s["target"]] * 2, ["low hum"] * 2, SR, others=[["dog", "siren"], []])
    untold = scorer.score([s["mix"]], [s["target"]], ["low hum"], SR)
    assert np.isclose(told["overall"][1], untold["overall"][0], atol=1e-6)  # no other label known: the target text
    assert not np.isclose(told["overall"][0], told["overall"][1], atol=1e-6)


def test_calibration_texts_name_the_other_sounds() -> None:
    """Each rated example's text is the target's plus the tuple's residual labels, the form the filter composes
    from a candidate's scene labels minus its positive labels."""
    samples = [s for s in synthetic_samples(6, SR, seconds=1.0, seed=5) if s["json"].get("residual_labels")]
    assert samples
    meta = samples[0]["json"]
    assert other_labels(meta) == [str(x) for x in meta["residual_labels"]]
    assert judge_text(target_text(meta), other_labels(meta)) == (
        f"{target_text(meta)} without {', '.join(str(x).replace('_', ' ') for x in meta['residual_labels'])}")
    assert other_labels({"negative_labels": ["dog"]}) == ["dog"] and other_labels({}) == []
