"""`engine.judge_calibration`: before filter_K the run's judge is re-calibrated on separator K's own outputs
(judge_K), filter_K and tiers_K score with judge_K, the natural items come from the stop rule's split only, and a
re-run resumes judge_K from its marker; `stemforge train judge-calibration` does the same as one command.

The tiny preset's budgets are a few steps: what is tested is the wiring and the lineage, not the judge's quality
(bench/eval_judge_gate.py and docs/perf/judge_pc.md measure that on the demo)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engine.judge_calibration import natural_truth_items
from engine.run_config import load as load_config
from engine.steps import natural_eval_set, sections_of, step_key
from flows.cli import cli
from flows.cycle import stemforge_run
from models.judge import JudgeConfig, build_judge
from models.judge.checkpoint import file_sha256
from engine.data_steps import scene_rows
from engine.engine_steps import scenes_manifest

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def _marker(root: Path, step: str) -> dict:
    return json.loads((root / "steps" / f"{step}.json").read_text())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["inprocess", "ray"])
def test_each_filter_scores_with_the_judge_calibrated_on_its_separator(tmp_path, request, caplog, backend):
    if backend == "ray":
        request.getfixturevalue("ray_local")
    cfg = load_config(TINY, [f"engine.backend={backend}", "engine.final.enabled=false",
                             "engine.judge_calibration.enabled=true", "engine.judge_calibration.steps=3",
                             "engine.judge_calibration.train_tuples=4",
                             # every candidate kept, so tiers_0 has tracks whose lineage the test can read
                             "filters.itt_min_db=-100", "filters.clap_target_enabled=false",
                             "filters.pc_enabled=false", "filters.silence_enabled=false"])
    with caplog.at_level(logging.INFO, logger="stemforge.run"):
        report = stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(tmp_path), name="cal")
    # under Ray each calibration is a task in a worker process of its own (its memory goes when the step ends)
    assert all((f"judge_{k}: running as a Ray task" in caplog.text) == (backend == "ray") for k in (0, 1))
    root = tmp_path / "cal"
    assert [it["iteration"] for it in report["iterations"]] == [0, 1]
    run_judge = _marker(root, "scorer_judge")["outputs"]
    corpus = _marker(root, "corpus")["outputs"]
    val_items = natural_truth_items(natural_eval_set(corpus)["scenes"], natural_eval_set(corpus)["audit"],
                                    cfg.run.stop_split, cfg.audio.sample_rate)
    test_ids = {r["clip_id"] for r in scene_rows(scenes_manifest(corpus), ["test"])}
    assert val_items and not any(x["__key__"].split("/")[0] in test_ids for x in val_items)
    hashes = set()
    for k in (0, 1):  # tiny: max_iterations 1 with final_pseudo_label, so separators 0 and 1 both pseudo-label
        judge = _marker(root, f"judge_{k}")["outputs"]
        separator = _marker(root, f"separator_{k}")["outputs"]
        assert judge["init"] == run_judge["checkpoint_hash"] and judge["separator"] == separator["checkpoint_hash"]
        assert judge["targets"] == "separator-proxy" and judge["steps"] == 3
        assert judge["text_form"] == "target+others"  # it reads the mixture's other labels (models/judge/prompt.py)
        assert judge["natural_items"] == len(val_items)  # the validation scenes with stems, never the test scenes
        assert judge["tuples"] == cfg.engine.synthetic_counts["val"] + 4 + len(val_items)
        assert judge["heldout"]["n"] > 0 and judge["test"]["n"] > 0
        assert file_sha256(judge["checkpoint"])[:16] == judge["checkpoint_hash"] != run_judge["checkpoint_hash"]
        filt = _marker(root, f"filter_{k}")["outputs"]
        assert filt["model_versions"] == {"separator": separator["checkpoint_hash"],
                                          "clap": _marker(root, "scorer_clap")["outputs"]["checkpoint_hash"],
                                          "judge": judge["checkpoint_hash"],
                                          "pc": _marker(root, "scorer_pc")["outputs"]["checkpoint_hash"]}
        hashes.add(judge["checkpoint_hash"])
    assert len(hashes) == 2  # one calibration per separator
    order = [json.loads(p.read_text())["step"] for p in sorted((root / "steps").glob("*.json"),
                                                                key=lambda p: p.stat().st_mtime_ns)]
    assert order.index("separator_0") < order.index("judge_0") < order.index("filter_0"), order
    assert order.index("separator_1") < order.index("judge_1") < order.index("filter_1"), order
    # tiers_0 (the data of separator 1) carries judge_0 in every kept track's lineage
    from models.separator.data import ShardSource

    tiers = _marker(root, "tiers_0")["outputs"]
    metas = [m for t in ("itt", "sst") if tiers[t]["count"]
             for m in ShardSource([Path(tiers[t]["dir"])], cfg.audio.sample_rate).metas()]
    assert metas and all(m["model_versions"]["judge"] == _marker(root, "judge_0")["outputs"]["checkpoint_hash"] for m in metas)
    # a second invocation resumes both calibrations from their markers
    stamps = {k: (root / "steps" / f"judge_{k}.json").stat().st_mtime_ns for k in (0, 1)}
    again = stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(tmp_path), name="cal")
    assert {"judge_0", "judge_1"} <= set(again["resumed_steps"])
    assert stamps == {k: (root / "steps" / f"judge_{k}.json").stat().st_mtime_ns for k in (0, 1)}


def test_calibration_keys_only_its_own_step():
    base = load_config(TINY)
    on = load_config(TINY, ["engine.judge_calibration.enabled=true", "engine.judge_calibration.steps=50"])
    assert "engine.judge_calibration" in sections_of("judge_2")
    assert step_key(on, "judge_1", "r", {}, "v") != step_key(base, "judge_1", "r", {}, "v")
    for step in ("separator_1", "control_1", "evaluate_1", "corpus"):  # filter_K moves with its inputs (judge_K)
        assert step_key(on, step, "r", {}, "v") == step_key(base, step, "r", {}, "v"), step


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["train", "judge-calibration", *args, "--config", TINY, "-q"])


@pytest.mark.timeout(600)
def test_judge_calibration_command_on_a_run_s_files(tmp_path):
    cfg = load_config(TINY, ["engine.backend=inprocess", "engine.final.enabled=false"])
    stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(tmp_path), name="plain", until="filter_0")
    root = tmp_path / "plain"
    assert not list((root / "steps").glob("judge_*.json"))  # off (the tiny preset's setting): no calibration step
    judge, sep = _marker(root, "scorer_judge")["outputs"], _marker(root, "separator_0")["outputs"]
    syn, corpus = _marker(root, "synthetic")["outputs"]["dirs"], _marker(root, "corpus")["outputs"]
    out = tmp_path / "calibrated.pt"
    res = _invoke("--judge", judge["checkpoint"], "--separator", sep["checkpoint"], "--shards", syn["val"],
                  "--stems-corpus", corpus["dir"], "--heldout", syn["test"], "--steps", "2", "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(Path(str(out) + ".report.json").read_text())
    n_val = len(natural_truth_items(corpus["scenes"], corpus["audit"], "val", cfg.audio.sample_rate))
    assert report["stems"]["items"] == n_val > 0 and report["targets"] == "separator-proxy"
    assert report["tuples"] == cfg.engine.synthetic_counts["val"] + n_val and report["test"]["n"] > 0
    assert report["init"] == judge["checkpoint_hash"] and file_sha256(out)[:16] == report["checkpoint_hash"]
    scorer = build_judge(JudgeConfig(checkpoint=str(out), device="cpu"))
    mix = np.full((1, 16000), 0.01, np.float32)
    assert set(scorer.score(mix, mix, ["a dog barking"], 16000)) == {"overall", "recall", "precision", "faithfulness"}
    # a corpus without stems is refused, naming the folder it looked for
    bare = tmp_path / "bare"
    (bare / "manifests" / "scenes").mkdir(parents=True)
    res = _invoke("--judge", judge["checkpoint"], "--separator", sep["checkpoint"], "--shards", syn["val"],
                  "--stems-corpus", str(bare), "--out", str(tmp_path / "x.pt"))
    assert res.exit_code != 0 and str(bare / "manifests" / "audit") in res.output and not (tmp_path / "x.pt").exists()
