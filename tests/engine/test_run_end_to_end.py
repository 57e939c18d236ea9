"""The whole engine on a tiny demo corpus with tiny budgets: every step, the report contract, resume by markers.

Budgets are seconds and a few optimiser steps, so the numbers mean nothing; what is tested is that every step runs
(the scorers in their background process included), the report has the fields the issue names, the tiered
candidates are accounted for, and a second invocation resumes every step instead of recomputing it.
"""
from __future__ import annotations

import json

import pytest

from flows.config import load as load_config
from engine.run import run_job
from models.separator.checkpoint import load_checkpoint

OVERRIDES = [
    "corpus.demo.sources_per_class={train: 3, val: 1, test: 1}",
    "corpus.demo.scenes={train: 3, val: 1, test: 2}",
    "corpus.demo.classes=[dog, siren, piano, rain, bird, engine]",
    "corpus.demo.workers=1",
    "engine.synthetic_counts={train: 24, val: 4, test: 4}",
    "engine.separator_budget_s=3",
    "engine.retrain_budget_s=3",
    "engine.eval_max_items=4",
    "engine.scorer_steps={clap: 3, judge_pretrain: 2, judge_finetune: 2, pc: 2}",
    "separator.steps_per_epoch=2",
    "separator.batch_size=4",
    "separator.val_max=4",
    "judge.max_clips=24",
    "pc.max_clips=24",
]


@pytest.mark.parametrize("queries", ["config", "run_clap"])
def test_run_end_to_end_reports_every_iteration_and_resumes(tmp_path, queries):
    cfg = load_config(None, [*OVERRIDES, f"engine.separator_queries={queries}", "separator.grad_threads=2"])
    assert cfg.engine.parallel_scorers
    report = run_job(cfg, out_root=tmp_path, name="e2e")
    root = tmp_path / "e2e"
    assert [it["iteration"] for it in report["iterations"]] == [0, 1]
    keys = ("separator_checkpoint", "sdri_db", "si_sdri_db", "natural_sdri_db", "silence_sdr_db", "candidates",
            "kept_itt", "kept_sst", "kept_hours_itt", "kept_hours_sst", "re_sdr_mean_db", "prop_re_sdr_gt15",
            "rejections")
    for it in report["iterations"]:
        assert all(k in it for k in keys), sorted(set(keys) - set(it))
        assert it["candidates"] > 0 and it["natural_sdri_db"] is not None
    ck = load_checkpoint(report["iterations"][1]["separator_checkpoint"])
    # separator_0 leaves the second core to the scorer process; the retrain, alone, splits batches over both
    assert load_checkpoint(report["iterations"][0]["separator_checkpoint"]).config["grad_threads"] == 1
    assert ck.config["grad_threads"] == cfg.separator.grad_threads == 2
    if queries == "run_clap":
        # the run's CLAP trains first (its text tower embeds the separators' queries); judge and PC train alongside
        assert set(report["parallel_steps"]) == {"scorer_judge", "scorer_pc"}
        assert ck.text_encoder == f"clap:{report['scorers']['clap']['checkpoint']}"
    else:
        assert set(report["parallel_steps"]) == {"scorer_clap", "scorer_judge", "scorer_pc"}
        assert ck.text_encoder.startswith("hash")
    assert report["resumed_steps"] == []
    for name in ("report.json", "report.md", "plot_sdri.png", "plot_scores.png", "plot_sweep.png"):
        assert (root / name).is_file(), name
    on_disk = json.loads((root / "report.json").read_text())
    assert on_disk["iterations"][1]["separator_checkpoint"] == report["iterations"][1]["separator_checkpoint"]
    payoff = on_disk["last_filter"]["payoff"]
    if payoff.get("available"):
        assert payoff["filters"]["judge"]["gating"] is cfg.filters.judge_enabled

    again = run_job(cfg, out_root=tmp_path, name="e2e")
    assert "separator_1" in again["resumed_steps"] and "scorer_judge" in again["resumed_steps"]
    assert again["parallel_steps"] == []
    assert again["iterations"][1]["sdri_db"] == report["iterations"][1]["sdri_db"]
