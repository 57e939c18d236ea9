"""`stemforge pseudolabel | filter | tiers | train final`: the engine's steps as commands, with the flows' code.

A tiny run stopped after `filter_0` provides the corpus, scorers and separator 0; the commands, pointed at it
with `--from-run`, must reproduce its filter step exactly (same candidates, scores and decisions) in their own
work directory, tier the kept candidates, pseudo-label without dropping anything, and resume idempotently.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engine.run_config import load as load_config
from flows.cli import cli
from flows.cycle import stemforge_run
from pipelines.filters.table import read_candidates

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
BASE = ["--config", TINY, "--set", "engine.backend=inprocess"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps")
    cfg = load_config(TINY, ["engine.backend=inprocess"])
    res = stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(out), name="r", until="filter_0")
    assert res["stopped_after"] == "filter_0"
    return out / "r"


def _invoke(args: list[str]):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    return res, (json.loads(res.stdout.strip().splitlines()[-1]) if res.exit_code == 0 else None)


@pytest.mark.timeout(600)
def test_filter_and_tiers_commands_reproduce_the_run_step(run_dir, tmp_path):
    work = tmp_path / "work"
    res, out = _invoke(["filter", *BASE, "--from-run", str(run_dir), "--out", str(work)])
    assert res.exit_code == 0, res.output
    ours = read_candidates(out["candidates_table"])
    theirs = read_candidates(run_dir / "iter0" / "filter" / "table")
    order_a, order_b = np.argsort(ours["candidate_id"]), np.argsort(theirs["candidate_id"])
    assert list(np.asarray(ours["candidate_id"])[order_a]) == list(np.asarray(theirs["candidate_id"])[order_b])
    for col in ("keep", "tier", "re_sdr_db", "clap_target", "reason"):
        assert list(np.asarray(ours[col])[order_a]) == list(np.asarray(theirs[col])[order_b]), col
    recorded = json.loads((work / "commands" / "filter_0.json").read_text())
    assert recorded["separator"]["checkpoint"].endswith("best.pt") and set(recorded["scorers"]) == {"clap", "judge", "pc"}
    # a re-run resumes from the marker: same output, nothing recomputed
    mtime = (work / "steps" / "filter_0.json").stat().st_mtime_ns
    res2, out2 = _invoke(["filter", *BASE, "--from-run", str(run_dir), "--out", str(work)])
    assert out2 == out and (work / "steps" / "filter_0.json").stat().st_mtime_ns == mtime
    res, tiers = _invoke(["tiers", *BASE, "--out", str(work)])
    assert res.exit_code == 0, res.output
    keep = np.asarray(ours["keep"], bool)
    tier = np.asarray(ours["tier"], object)
    assert tiers["itt"]["count"] == int((keep & np.isin(tier, ["itt", "sst"])).sum())
    assert tiers["sst"]["count"] == int((keep & (tier == "sst")).sum())
    assert (work / "iter0" / "tiers" / "itt" / "manifest.json").is_file()


@pytest.mark.timeout(600)
def test_pseudolabel_keeps_every_candidate_and_commands_explain_missing_inputs(run_dir, tmp_path):
    res, out = _invoke(["pseudolabel", *BASE, "--from-run", str(run_dir), "--out", str(tmp_path / "pl")])
    assert res.exit_code == 0, res.output
    table = read_candidates(out["candidates_table"])
    assert out["candidates"] > 0 and len(table["candidate_id"]) == out["candidates"]
    assert bool(np.all(np.asarray(table["keep"], bool))) and out["rejections"] == {}  # every gate off: none dropped
    from engine.sinks import read_kept_audio

    assert set(read_kept_audio(Path(out["kept_audio"]).parent)) == set(table["candidate_id"])  # every track stored
    res, _ = _invoke(["filter", *BASE, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "missing input(s)" in res.output and "--from-run" in res.output
    res, _ = _invoke(["tiers", *BASE, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "run `stemforge filter" in res.output
    res, _ = _invoke(["train", "final", "--run", str(run_dir)])
    assert res.exit_code == 2 and "report.json: not found" in res.output, res.output


@pytest.mark.timeout(600)
def test_train_final_command_retrains_only_when_the_final_stage_changes(tmp_path):
    cfg = load_config(TINY, ["engine.backend=inprocess"])
    report = stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(tmp_path), name="f")
    root = tmp_path / "f"
    card_path = root / "final" / "model_card.json"
    card = json.loads(card_path.read_text())
    assert report["final"]["dir"] == str(root / "final") and card["separator"]["steps"] == cfg.engine.final.steps
    from engine.steps import best_iteration

    best = best_iteration(report)  # the best separator on the validation scenes is where the final one starts
    assert best == max(report["iterations"], key=lambda r: (r["stop_value"], -r["iteration"]))["iteration"]
    assert card["separator"]["init"] == report["iterations"][best]["separator_hash"]
    mtime = card_path.stat().st_mtime_ns
    res, out = _invoke(["train", "final", "--run", str(root)])  # nothing changed: every final step resumes
    assert res.exit_code == 0, res.output
    assert card_path.stat().st_mtime_ns == mtime and out["dir"] == str(root / "final")
    res, out = _invoke(["train", "final", "--run", str(root), "--steps", "6", "--judge-steps", "1"])
    assert res.exit_code == 0, res.output
    card = json.loads(card_path.read_text())
    assert card["separator"]["steps"] == 6 and card["judge"]["steps"] == 1
    mtime = card_path.stat().st_mtime_ns
    res, out = _invoke(["train", "final", "--run", str(root), "--steps", "6", "--judge-steps", "1", "--workers", "1"])
    assert res.exit_code == 0, res.output  # engine.final.train_workers changed (2 -> 1): the final stage trains again
    marker = json.loads((root / "steps" / "final_separator.json").read_text())["outputs"]
    assert card_path.stat().st_mtime_ns > mtime and marker["train_workers"] == 1 and marker["steps"] == 6
    # the cycle's own results are untouched by the final stage
    again = json.loads((root / "report.json").read_text())["iterations"]
    assert [r["separator_hash"] for r in again] == [r["separator_hash"] for r in report["iterations"]]
    assert (root / "steps" / "separator_1.json").stat().st_mtime_ns < card_path.stat().st_mtime_ns
