"""Run directory markers (resume, restart, config-change refusal) and the report writer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.report import write_report
from engine.workspace import RunError, Workspace


def test_steps_run_once_and_resume_from_markers(tmp_path):
    ws = Workspace.open(tmp_path / "r", "cfgA")
    calls = []
    out = ws.step("a", lambda: calls.append(1) or {"x": 1})
    assert out == {"x": 1} and calls == [1]
    ws2 = Workspace.open(tmp_path / "r", "cfgA")
    assert ws2.step("a", lambda: calls.append(2) or {"x": 2}) == {"x": 1}
    assert calls == [1] and ws2.resumed_steps == ["a"]


def test_failed_step_leaves_no_marker(tmp_path):
    ws = Workspace.open(tmp_path / "r", "cfgA")

    def boom():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        ws.step("b", boom)
    assert ws.done("b") is None
    assert ws.step("b", lambda: {"ok": True}) == {"ok": True}


def test_config_change_refused_unless_allowed_or_restarted(tmp_path):
    Workspace.open(tmp_path / "r", "cfgA").step("a", lambda: {})
    with pytest.raises(RunError, match="--restart"):
        Workspace.open(tmp_path / "r", "cfgB")
    assert Workspace.open(tmp_path / "r", "cfgB", allow_config_change=True).done("a") is not None
    fresh = Workspace.open(tmp_path / "r", "cfgB", restart=True)
    assert fresh.done("a") is None


def test_report_writes_json_markdown_and_pngs(tmp_path):
    its = [
        {"iteration": 0, "separator_checkpoint": "a.pt", "sdri_db": 3.0, "si_sdri_db": 2.0, "natural_sdri_db": 1.0,
         "silence_sdr_db": 40.0, "candidates": 10, "kept_itt": 3, "kept_sst": 1, "kept_hours_itt": 0.01, "kept_hours_sst": 0.002,
         "re_sdr_mean_db": 9.0, "prop_re_sdr_gt15": 0.1, "rejections": {"judge_low": 5}},
        {"iteration": 1, "separator_checkpoint": "b.pt", "sdri_db": 4.0, "si_sdri_db": 3.0, "natural_sdri_db": 2.5,
         "silence_sdr_db": 50.0, "candidates": 10, "kept_itt": 5, "kept_sst": 2, "kept_hours_itt": 0.02, "kept_hours_sst": 0.004,
         "re_sdr_mean_db": 11.0, "prop_re_sdr_gt15": 0.2, "rejections": {}},
    ]
    table = {"re_sdr_db": np.array([5.0, 12.0, 20.0]), "clap_target": np.array([0.1, 0.5, np.nan]), "judge_overall": np.array([3.0, 4.5, 4.1])}
    last_filter = {"thresholds": {"itt_min_db": 10.0, "sst_min_db": 15.0, "clap_target_min": 0.35, "judge_min": 4.0},
                   "sweep": [{"judge_threshold": 4.0, "tier": "itt", "kept": 2, "hours": 0.1, "fraction": 0.2},
                             {"judge_threshold": 4.0, "tier": "sst", "kept": 1, "hours": 0.05, "fraction": 0.1}],
                   "payoff": {"available": True, "filters": {"remix": {"kept": 2, "dropped": 1, "true_sdr_kept_db": 8.0, "true_sdr_dropped_db": 1.0}},
                              "correlation_with_true_sdr": {"re_sdr_db": 0.7}}}
    report = {"name": "t", "config_hash": "abc", "iterations": its, "last_filter": last_filter, "timings": {"corpus": 1.0},
              "resumed_steps": [], "total_seconds": 12.0}
    files = write_report(tmp_path, report, table)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["iteration"] for r in data["iterations"]] == [0, 1]
    md = (tmp_path / "report.md").read_text()
    assert "natural_sdri_db" in md and "judge_low: 5" in md and "re_sdr_db 0.700" in md
    for key in ("sdri", "histograms", "sweep"):
        assert open(files[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
