"""Every filter's keep/drop decision and reason, tiers, the final combination, the table and the sweep."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.filters import FilterConfig, FinalDecision, decision_stages
from pipelines.filters.clap import ClapDecision
from pipelines.filters.judge import JudgeDecision
from pipelines.filters.pc import PCDecision
from pipelines.filters.remix import RemixDecision, remix_scores, tier_of
from pipelines.filters.rules import rejection_counts
from pipelines.filters.silence import SilenceDecision, SilenceScoring, silence_ratio
from pipelines.filters.sweep import filter_payoff, threshold_sweep
from pipelines.filters.table import read_candidates, write_candidates

SAJ_JUDGE = dict(judge_min=4.0, judge_sweep=[3.8, 4.0, 4.2, 4.4, 4.6])  # SAJ's threshold: the fixtures' scale
CFG = FilterConfig(**SAJ_JUDGE)


def _run(stage, **cols):
    return stage({k: np.asarray(v, dtype=np.float64) for k, v in cols.items()})


def test_remix_tiers_need_both_metrics_strictly_above():
    assert tier_of(15.1, 15.1, CFG) == "sst"
    assert tier_of(20.0, 15.0, CFG) == "itt"  # SST needs both > 15
    assert tier_of(10.5, 30.0, CFG) == "itt"
    assert tier_of(10.0, 30.0, CFG) == ""     # strictly greater
    assert tier_of(float("nan"), 30.0, CFG) == ""
    out = _run(RemixDecision(CFG), re_sdr_db=[16, 12, 9, np.nan], re_sisdr_db=[16, 12, 30, 30])
    assert out["tier"] == ["sst", "itt", "", ""]
    assert list(out["keep_remix"]) == [True, True, False, False]
    assert out["reason_remix"] == ["", "", "re_sdr_below_itt", "remix_missing"]


def test_remix_tier_bounds_are_configurable_and_validated():
    cfg = FilterConfig(itt_min_db=5, sst_min_db=8)
    assert tier_of(9, 9, cfg) == "sst" and tier_of(6, 6, cfg) == "itt"
    with pytest.raises(ValueError, match="stricter"):
        FilterConfig(itt_min_db=12, sst_min_db=11)


def test_remix_scores_of_exact_decomposition_are_high_and_of_missing_track_low():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(1600).astype(np.float32), rng.standard_normal(1600).astype(np.float32)
    scene = a + b
    re_sdr, re_sisdr = remix_scores(scene, [a, b])
    assert re_sdr > 60 and re_sisdr > 60
    low, _ = remix_scores(scene, [a])
    assert -1 < low < 5
    with pytest.raises(ValueError, match="frames"):
        remix_scores(scene, [a[:10]])


def test_clap_filter_reasons():
    out = _run(ClapDecision(CFG), clap_target=[0.5, 0.2, 0.5, np.nan], clap_residual=[-0.1, -0.1, 0.3, -0.2])
    assert list(out["keep_clap_target"]) == [True, False, True, False]
    assert out["reason_clap_target"] == ["", "clap_target_low", "", "clap_target_missing"]
    assert list(out["keep_clap_residual"]) == [True, True, False, True]
    assert out["reason_clap_residual"][2] == "clap_residual_high"


def test_pc_silence_judge_thresholds():
    pc = _run(PCDecision(CFG), pc_target=[2.0, 2.5, 7.0])
    assert list(pc["keep_pc"]) == [True, False, False] and pc["reason_pc"][1] == "pc_high"
    sil = _run(SilenceDecision(CFG), silence_ratio=[0.5, 0.95, 0.99])
    assert list(sil["keep_silence"]) == [True, False, False] and sil["reason_silence"][2] == "mostly_silent"
    judge = _run(JudgeDecision(CFG), judge_overall=[4.0, 3.99, 4.6])  # >= is inclusive
    assert FilterConfig().judge_min == 3.0  # the default: a calibrated judge's 2.5 dB (pipelines/filters/judge.py)
    assert list(judge["keep_judge"]) == [True, False, True] and judge["reason_judge"][1] == "judge_low"


def test_disabled_filter_never_drops_even_without_scores():
    cfg = FilterConfig(judge_enabled=False, pc_enabled=False)
    out = JudgeDecision(cfg)({"x": np.zeros(3)})
    assert out["keep_judge"].all() and out["reason_judge"] == ["", "", ""]
    assert PCDecision(cfg)({"pc_target": np.array([9.0])})["keep_pc"].all()


def test_silence_ratio_measures_silent_share():
    sr = 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    assert silence_ratio(tone, sr) == 0.0
    half = np.concatenate([tone[: sr // 2], np.zeros(sr // 2)])
    assert silence_ratio(half, sr) == pytest.approx(0.5, abs=0.02)
    assert silence_ratio(np.zeros(sr), sr) == 1.0
    assert silence_ratio(np.zeros(10), sr) == 1.0
    out = SilenceScoring(CFG)({"target": [tone, np.zeros(sr)], "sample_rate": [sr, sr]})
    assert list(out["silence_ratio"]) == [0.0, 1.0]


def _candidates():
    n = 6
    return {
        "candidate_id": [f"c{i}" for i in range(n)],
        "scene_id": ["s0", "s0", "s1", "s1", "s2", "s2"],
        "label": ["dog", "rain", "dog", "car", "bell", "rain"],
        "scene_labels": [["dog", "rain"]] * 2 + [["dog", "car"]] * 2 + [["bell", "rain"]] * 2,
        "duration_s": np.full(n, 3600.0),
        "target": [np.zeros(4)] * n,
        "re_sdr_db": np.array([20, 20, 12, 12, 5, 5.0]),
        "re_sisdr_db": np.array([20, 20, 12, 12, 5, 5.0]),
        "clap_target": np.array([0.5, 0.1, 0.5, 0.5, 0.5, 0.5]),
        "clap_residual": np.array([-0.2, -0.2, -0.2, -0.2, -0.2, -0.2]),
        "pc_target": np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        "silence_ratio": np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
        "judge_overall": np.array([4.5, 4.5, 3.9, 4.3, 4.9, 4.9]),
        "true_sdr_db": np.array([12.0, 3.0, 8.0, 9.0, 1.0, 0.0]),
    }


def _decide(batch, cfg=CFG):
    for stage in decision_stages(cfg):
        batch = stage(batch)
    return batch


def test_final_decision_combines_all_filters_and_keeps_every_row():
    out = _decide(_candidates())
    assert len(out["keep"]) == 6  # nothing is removed, only flagged
    assert list(out["keep"]) == [True, False, False, True, False, False]
    assert out["reason"] == ["", "clap_target_low", "judge_low", "", "re_sdr_below_itt", "re_sdr_below_itt"]
    assert rejection_counts(out["reasons"]) == {"re_sdr_below_itt": 2, "clap_target_low": 1, "judge_low": 1}
    assert out["tier"][:4] == ["sst", "sst", "itt", "itt"]


def test_multiple_failures_are_all_listed():
    out = FinalDecision()({"keep_a": np.array([False]), "reason_a": ["a_bad"], "keep_b": np.array([False]), "reason_b": ["b_bad"]})
    assert out["reasons"] == ["a_bad; b_bad"] and out["reason"] == ["a_bad"]


def test_table_records_dropped_candidates_and_round_trips(tmp_path):
    out = _decide(_candidates())
    path = write_candidates(tmp_path / "candidates.parquet", out)
    table = read_candidates(path)
    assert len(table["candidate_id"]) == 6
    assert "target" not in table  # audio stays out of the table
    assert list(table["keep"]) == list(out["keep"])
    assert list(table["reason"]) == out["reason"]
    assert list(table["scene_labels"][0]) == ["dog", "rain"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_threshold_sweep_counts_and_hours_per_tier():
    table = _decide(_candidates())
    rows = {(r["judge_threshold"], r["tier"]): r for r in threshold_sweep(table, CFG)}
    assert set(t for t, _ in rows) == {3.8, 4.0, 4.2, 4.4, 4.6}
    # at 3.8: c0 (sst), c2 and c3 (itt) pass everything but judge's threshold; c1 fails CLAP
    assert rows[(3.8, "itt")]["kept"] == 3 and rows[(3.8, "sst")]["kept"] == 1
    assert rows[(4.0, "itt")]["kept"] == 2 and rows[(4.0, "itt")]["hours"] == pytest.approx(2.0)
    assert rows[(4.6, "itt")]["kept"] == 0
    counts = [rows[(t, "itt")]["kept"] for t in (3.8, 4.0, 4.2, 4.4, 4.6)]
    assert counts == sorted(counts, reverse=True)


def test_filter_payoff_compares_true_sdr_of_kept_and_dropped():
    table = _decide(_candidates())
    pay = filter_payoff(table)
    assert pay["available"]
    assert pay["filters"]["remix"]["true_sdr_kept_db"] == pytest.approx(8.0)
    assert pay["filters"]["remix"]["true_sdr_dropped_db"] == pytest.approx(0.5)
    assert pay["correlation_with_true_sdr"]["re_sdr_db"] > 0.5
    assert filter_payoff({"keep": np.array([True])}) == {"available": False}


def test_disabled_filters_never_drop_but_report_what_they_would_keep():
    from pipelines.filters import all_rules

    cfg = FilterConfig(judge_enabled=False, clap_target_enabled=False, **SAJ_JUDGE)
    table = _decide(_candidates(), cfg)
    assert list(table["keep_judge"]) == [True] * 6 and list(table["keep_clap_target"]) == [True] * 6
    assert list(table["keep"]) == [True, True, True, True, False, False]  # only remix drops now
    pay = filter_payoff(table, rules=all_rules(cfg))
    judge, clap = pay["filters"]["judge"], pay["filters"]["clap_target"]
    assert judge["gating"] is False and clap["gating"] is False and pay["filters"]["remix"]["gating"] is True
    # judge >= 4.0 would keep c0, c1, c3, c4, c5 (true SDR 12, 3, 9, 1, 0) and drop c2 (8)
    assert (judge["kept"], judge["dropped"]) == (5, 1)
    assert judge["true_sdr_kept_db"] == pytest.approx(5.0) and judge["true_sdr_dropped_db"] == pytest.approx(8.0)
    assert (clap["kept"], clap["dropped"]) == (5, 1)
    # without the rules the report can only show the (non-)decision
    assert filter_payoff(table)["filters"]["judge"]["kept"] == 6


def test_sweep_applies_judge_thresholds_even_when_the_judge_does_not_gate():
    cfg = FilterConfig(judge_enabled=False, **SAJ_JUDGE)
    rows = {(r["judge_threshold"], r["tier"]): r["kept"] for r in threshold_sweep(_decide(_candidates(), cfg), cfg)}
    assert rows[(3.8, "itt")] == 3 and rows[(4.6, "itt")] == 0


def test_judge_stage_hands_the_mixtures_other_labels_to_the_judge():
    """What a context-reading judge is told (`pipelines.filters.judge.other_labels`): a candidate's scene labels
    minus its positive labels (matched by slug), else a shard sample's residual labels, else the query negatives."""
    from pipelines.filters.judge import other_labels

    cands = {"scene_labels": [["dog", "alarm clock", "rain"], ["siren"], None],
             "positive_labels": [["alarm_clock"], ["siren"], ["dog"]], "residual_labels": [["x"], ["y"], ["z"]]}
    assert other_labels(cands) == [["dog", "rain"], [], []]
    assert other_labels({"residual_labels": [["rain"], None], "negative_labels": [["q"], ["r"]]}) == [["rain"], []]
    assert other_labels({"negative_labels": [["siren"]]}) == [["siren"]]
    assert other_labels({"positive_text": ["a dog"]}) is None
