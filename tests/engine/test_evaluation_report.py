"""The run report carries the evaluation's figures beside SDRi: intervals, all-zero baseline, silent share, per class."""
from __future__ import annotations

import json

from engine.evaluation import REPORT_KEYS
from engine.report import write_report


def _it(k: int, sdri: float, dog_sdri: float) -> dict:
    per_class = {"dog": {"n": 4, "sdri_db": dog_sdri, "si_sdri_db": 1.0, "silent_baseline_sdri_db": 2.3, "silent_share": 0.25},
                 "siren": {"n": 3, "sdri_db": 5.0, "si_sdri_db": 4.0, "silent_baseline_sdri_db": -1.0, "silent_share": 0.0}}
    return {"iteration": k, "separator_checkpoint": f"{k}.pt", "sdri_db": 3.0, "si_sdri_db": 2.0, "sdri_ci95_db": [2.5, 3.5],
            "silent_baseline_sdri_db": 1.5, "silent_share": 0.1, "silence_sdr_db": 40.0, "natural_sdri_db": sdri,
            "natural_si_sdri_db": 1.0, "natural_sdri_ci95_db": [sdri - 0.4, sdri + 0.4], "natural_silent_baseline_sdri_db": 1.2,
            "natural_silent_share": 0.143, "natural_items": 7, "natural_per_class": per_class, "synthetic_per_class": {},
            "rejections": {}}


def test_report_shows_intervals_baseline_silent_share_and_per_class_rows(tmp_path) -> None:
    its = [_it(0, 4.0, 1.0), _it(1, 5.0, 2.0)]
    assert set(REPORT_KEYS) <= set(its[0])  # the keys the run copies per iteration are the ones written here
    write_report(tmp_path, {"name": "t", "config_hash": "abc", "iterations": its, "last_filter": None,
                            "timings": {"corpus": 1.0}, "resumed_steps": [], "total_seconds": 1.0}, None)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["iterations"][1]["natural_sdri_ci95_db"] == [4.6, 5.4]
    md = (tmp_path / "report.md").read_text()
    assert "## Evaluation beside SDRi" in md and "[4.60, 5.40]" in md and "natural_silent_share" in md
    rows = [line for line in md.splitlines() if line.startswith("| dog ") or line.startswith("| siren ")]
    assert len(rows) == 2  # one row per class
    assert rows[0].split(" | ")[1:5] == ["4", "2.300", "1.000", "0.250"] and "| 2.000 |" in rows[0]
