"""The whole engine as the `stemforge_run` flow (ephemeral Prefect) on the tiny preset: every step, the report
contract, resume by markers.

Budgets are a few optimiser steps, so the numbers mean nothing; what is tested is that every step runs
(under Ray the scorers as Ray tasks beside separator_0; in-process one after another), the report has the fields
the issue names, the tiered candidates are accounted for, and a second invocation resumes every step from its
marker instead of recomputing it (no checkpoint or table is rewritten).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from engine.run_config import load as load_config
from flows.cycle import stemforge_run
from models.separator.checkpoint import load_checkpoint

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def run_job(cfg, out_root, name):
    """`stemforge run` as the CLI runs it: the parent flow, ephemeral Prefect."""
    return stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(out_root), name=name)


def _outputs(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every checkpoint, table and shard the run wrote: a resumed step rewrites none."""
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")
            if p.is_file() and p.suffix in {".pt", ".parquet", ".tar"}}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("queries,backend", [("config", "ray"), ("run_clap", "inprocess")])
def test_run_end_to_end_reports_every_iteration_and_resumes(tmp_path, request, caplog, queries, backend):
    if backend == "ray":
        request.getfixturevalue("ray_local")  # the run reuses the session's Ray instead of starting its own
    cfg = load_config(TINY, [f"engine.separator_queries={queries}", f"engine.backend={backend}"])
    assert cfg.engine.parallel_scorers and cfg.engine.final.enabled and cfg.engine.control
    with caplog.at_level(logging.INFO, logger="stemforge.run"):
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
    # step budgets: each fit stops at exactly its engine.*_steps, whatever the machine's speed
    for it, steps in zip(report["iterations"], (cfg.engine.separator_steps, cfg.engine.retrain_steps)):
        last = Path(it["separator_checkpoint"]).with_name("last.pt")
        assert load_checkpoint(last).train_state["step"] == steps and load_checkpoint(last).config["max_steps"] == steps
    if queries == "run_clap":  # the run's CLAP trains first: its text tower embeds the separators' queries
        assert ck.text_encoder == f"clap:{report['scorers']['clap']['checkpoint']}"
    else:
        assert ck.text_encoder.startswith("hash")
    if backend == "ray":
        assert report["ray"]["mode"] == "reused"
        # the three scorers trained as Ray tasks (other processes) beside separator_0 and wrote their own markers
        # (run_clap: CLAP first in this process, the separators need its text tower)
        remote = {"scorer_judge", "scorer_pc"} | ({"scorer_clap"} if queries == "config" else set())
        assert set(report["scorer_tasks"]) == remote
        assert all(t["pid"] != os.getpid() and not t["resumed"] for t in report["scorer_tasks"].values())
        # the final judge followed the scorers as a Ray task, finished before the bootstrap returned (so before
        # the first evaluation), and the control's evaluation ran as a Ray task beside its separator's
        for step in ("final_judge", "evaluate_control_1"):
            assert f"{step}: running as a Ray task" in caplog.text
    else:  # no Ray at all: the scorers train one after another in this process
        assert report["ray"] is None and report["scorer_tasks"] == {}
        assert "running as a Ray task" not in caplog.text
    order = [json.loads(p.read_text())["step"] for p in sorted((root / "steps").glob("*.json"),
                                                                key=lambda p: p.stat().st_mtime_ns)]
    assert (order.index("final_judge") < order.index("evaluate_0")) == (backend == "ray"), order
    assert order.index("final_judge") < order.index("final_separator"), order
    # the final separator on engine.final.train_workers DDP ranks under Ray (one process in-process)
    final_fit = json.loads((root / "steps" / "final_separator.json").read_text())["outputs"]
    assert cfg.engine.final.train_workers == 2
    assert final_fit["train_workers"] == (2 if backend == "ray" else 1)
    assert final_fit["steps"] == cfg.engine.final.steps
    for s in ("scorer_clap", "scorer_judge", "scorer_pc"):
        marker = json.loads((root / "steps" / f"{s}.json").read_text())
        assert Path(marker["outputs"]["checkpoint"]).is_file() and marker["outputs"]["checkpoint"] == report["scorers"][s[7:]]["checkpoint"]
    assert report["resumed_steps"] == []
    for name in ("report.json", "report.md", "plot_sdri.png", "plot_scores.png", "plot_sweep.png"):
        assert (root / name).is_file(), name
    on_disk = json.loads((root / "report.json").read_text())
    assert on_disk["iterations"] == json.loads(json.dumps(report["iterations"]))
    payoff = on_disk["last_filter"]["payoff"]
    assert payoff["available"], payoff  # the demo corpus has audit stems: true SDR exists for every candidate
    assert payoff["filters"]["judge"]["gating"] is cfg.filters.judge_enabled

    written = _outputs(root)
    assert written
    again = run_job(cfg, out_root=tmp_path, name="e2e")
    assert sorted(again["resumed_steps"]) == sorted(report["timings"])  # every step resumed, none re-ran
    assert again["scorer_tasks"] == {}
    assert _outputs(root) == written  # and nothing it had written was rewritten


@pytest.mark.timeout(300)
def test_a_failing_scorer_task_surfaces_its_error_after_separator_0_is_saved(tmp_path, ray_local):
    # an unknown scorer cap makes every scorer step raise inside its Ray task (engine.model_steps.capped)
    cfg = load_config(TINY, ["engine.backend=ray", "engine.scorer_steps={clap: 3, bogus: 1}"])
    with pytest.raises(ValueError, match="unknown key") as info:
        run_job(cfg, out_root=tmp_path, name="bad")
    assert "in the Ray task of step scorer_" in "".join(getattr(info.value, "__notes__", []))
    steps = tmp_path / "bad" / "steps"
    assert (steps / "separator_0.json").is_file()  # the separator finished and kept its marker for the re-run
    assert not list(steps.glob("scorer_*.json"))
