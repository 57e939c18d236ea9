"""The separator evaluation's figures beside SDRi: all-zero-estimate baseline, silent share, per-class rows by class,
95 % intervals (models/separator/evaluate.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.separator.evaluate import TestItem, evaluate, is_silent, items_from_shards, mean_ci, paired_ci
from models.separator.infer import Separator
from separator_data import CLASSES, synthetic_samples, untrained_checkpoint, write_samples

torch.set_num_threads(1)
SR = 16000


def _item(key: str, classes: tuple[str, ...], target_gain: float, seed: int, n: int = 8000) -> TestItem:
    """Target: a 440 Hz tone; the rest of the mixture: noise; energies known exactly from the arrays."""
    rng = np.random.default_rng(seed)
    t = (target_gain * np.sin(2 * np.pi * 440 * np.arange(n) / SR)).astype(np.float32)
    rest = (0.1 * rng.standard_normal(n)).astype(np.float32)
    return TestItem(key, (t + rest).astype(np.float32), t, "a tone", None, classes, set(classes) | {"noise"}, False)


def test_silent_baseline_is_minus_mixture_sdr_and_a_zero_output_counts_as_silent(tmp_path: Path) -> None:
    ckpt = untrained_checkpoint(tmp_path / "u.pt")
    items = [_item("a", ("tone",), 0.05, 1), _item("b", ("tone",), 0.3, 2), _item("c", ("tone",), 0.01, 3)]
    # hand computation: SDR(X, x) = 10 log10(|x|^2 / |X - x|^2); an all-zero estimate scores its negative
    expected = {it.key: -10 * np.log10(np.sum(it.target.astype(np.float64) ** 2)
                                       / np.sum((it.mix.astype(np.float64) - it.target) ** 2)) for it in items}
    assert expected["c"] > 0 > expected["b"]  # positive for a quiet target: doing nothing "improves" it

    # threshold 1.0: the presence gate never opens, so every estimate is exact zeros
    closed = evaluate(Separator.load(ckpt, "cpu", gate_threshold=1.0), items, absent_queries=False)
    rows = {r["key"]: r for r in closed["items"]}
    for key, want in expected.items():
        assert rows[key]["silent_baseline_sdri"] == pytest.approx(want, abs=1e-6)
        assert rows[key]["sdri"] == pytest.approx(want, abs=1e-6) and rows[key]["silent"]
    assert closed["overall"]["silent_baseline_sdri"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    assert closed["overall"]["silent_share"] == 1.0 and closed["per_class"]["tone"]["silent_share"] == 1.0

    # gate off: the untrained mask passes part of the mixture, which is not silence; the baseline does not move
    open_ = evaluate(Separator.load(ckpt, "cpu", gate_threshold=0.0), items, absent_queries=False)
    assert open_["overall"]["silent_share"] == 0.0
    assert open_["overall"]["silent_baseline_sdri"] == pytest.approx(closed["overall"]["silent_baseline_sdri"])
    assert open_["overall"]["sdri"] != pytest.approx(closed["overall"]["sdri"], abs=1e-3)


def test_is_silent_threshold() -> None:
    mix = np.ones(1000, np.float32)
    assert is_silent(np.zeros(1000, np.float32), mix) and is_silent(np.zeros(1000, np.float32), np.zeros(1000))
    assert is_silent(mix * 1e-4, mix)  # -80 dB
    assert not is_silent(mix * 1e-2, mix)  # -40 dB


def test_per_class_rows_are_per_class_not_per_label_combination(tmp_path: Path) -> None:
    sep = Separator.load(untrained_checkpoint(tmp_path / "u.pt"), "cpu")
    items = [_item("1", ("dog",), 0.1, 1), _item("2", ("dog", "siren"), 0.1, 2), _item("3", ("siren",), 0.2, 3),
             _item("4", ("piano",), 0.1, 4)]
    rep = evaluate(sep, items, absent_queries=False)
    assert set(rep["per_class"]) == {"dog", "siren", "piano"}  # no "dog, siren" row
    assert {c: r["n"] for c, r in rep["per_class"].items()} == {"dog": 2, "siren": 2, "piano": 1}
    assert rep["overall"]["n"] == 4  # the two-label item counts once overall
    sdri = {r["key"]: r["sdri"] for r in rep["items"]}
    assert rep["per_class"]["dog"]["sdri"] == pytest.approx((sdri["1"] + sdri["2"]) / 2)
    assert rep["per_class"]["siren"]["sdri"] == pytest.approx((sdri["2"] + sdri["3"]) / 2)

    # shard tuples: one row per target class of the fixture vocabulary, absent queries phrase-worded
    write_samples(tmp_path / "s", list(synthetic_samples(8, seconds=0.5, seed=5, silent_every=4)))
    shard_items = list(items_from_shards([tmp_path / "s"], SR))
    asked: list[str] = []
    rep = evaluate(sep, shard_items, absent_queries=True, phrase=lambda c: asked.append(c) or f"the {c}")
    assert set(rep["per_class"]) <= set(CLASSES) and all("," not in c for c in rep["per_class"])
    assert sum(r["n"] for r in rep["per_class"].values()) == rep["overall"]["n"] == 6  # 2 of 8 are silent targets
    assert rep["absent_queries"]["n"] == 8 and len(asked) == 6 and set(asked) <= set(CLASSES)


def test_interval_contains_the_mean_narrows_with_n_and_is_seeded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(3.0, 2.0, 20), rng.normal(3.0, 2.0, 2000)
    lo_s, hi_s = mean_ci(small, seed=0)
    lo_l, hi_l = mean_ci(large, seed=0)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < 0.3 * (hi_s - lo_s)  # ~ 1/sqrt(100)
    assert 0.7 < (hi_s - lo_s) / (2 * 1.96 * small.std(ddof=1) / np.sqrt(20)) < 1.2  # ~ the normal interval
    assert mean_ci(small, seed=0) == [lo_s, hi_s] and mean_ci(small, seed=1) != [lo_s, hi_s]
    assert mean_ci([1.0], seed=0) is None

    sep = Separator.load(untrained_checkpoint(tmp_path / "u.pt"), "cpu")
    rep = evaluate(sep, [_item(str(i), ("tone",), 0.02 * (i + 1), i) for i in range(6)], absent_queries=False)
    lo, hi = rep["overall"]["sdri_ci95"]
    assert lo <= rep["overall"]["sdri"] <= hi and lo < hi
    b = rep["overall"]["silent_baseline_sdri_ci95"]
    assert b[0] <= rep["overall"]["silent_baseline_sdri"] <= b[1]

    d = paired_ci({"x": 3.0, "y": 5.0, "z": 1.0}, {"x": 1.0, "y": 2.0, "w": 9.0}, seed=0)
    assert d["n"] == 2 and d["mean"] == pytest.approx(2.5) and d["ci95"][0] <= 2.5 <= d["ci95"][1]
