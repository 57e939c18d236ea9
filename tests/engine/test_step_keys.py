"""Run identity and per-step cache keys: execution keys never change what a run computes, a step's key moves only
with its own config sections, its inputs, the code version and the run directory."""
from __future__ import annotations

import pytest

from engine.run_config import StemforgeConfig, with_overrides, work_hash
from engine.steps import sections_of, step_key


def test_execution_keys_do_not_change_the_run_identity():
    cfg = StemforgeConfig()
    for change in ({"engine.device": "cpu"}, {"engine.backend": "inprocess"}, {"engine.replicas": [2, 2]},
                   {"run.max_iterations": 5}, {"clap.device": "cuda"}):
        assert work_hash(with_overrides(cfg, change)) == work_hash(cfg), change
    for change in ({"run.seed": 1}, {"engine.retrain_steps": 7}, {"filters.itt_min_db": 3.0}):
        assert work_hash(with_overrides(cfg, change)) != work_hash(cfg), change


def test_step_key_follows_its_own_sections_inputs_code_and_run():
    cfg = StemforgeConfig()
    key = step_key(cfg, "corpus", "run-a", {"x": 1}, "v1")
    assert step_key(with_overrides(cfg, {"engine.device": "cpu"}), "corpus", "run-a", {"x": 1}, "v1") == key
    assert step_key(with_overrides(cfg, {"separator.lr": 0.1}), "corpus", "run-a", {"x": 1}, "v1") == key
    assert step_key(with_overrides(cfg, {"corpus.demo.source_seconds": 3.0}), "corpus", "run-a", {"x": 1}, "v1") != key
    assert step_key(cfg, "corpus", "run-b", {"x": 1}, "v1") != key  # a new run directory (e.g. --restart)
    assert step_key(cfg, "corpus", "run-a", {"x": 2}, "v1") != key
    assert step_key(cfg, "corpus", "run-a", {"x": 1}, "v2") != key
    sep = step_key(cfg, "separator_2", "run-a", {}, "v1")
    assert step_key(with_overrides(cfg, {"separator.lr": 0.1}), "separator_2", "run-a", {}, "v1") != sep
    assert step_key(with_overrides(cfg, {"filters.pc_max": 1.0}), "separator_2", "run-a", {}, "v1") == sep


def test_every_step_declares_its_sections():
    for step in ("corpus", "synthetic", "scorer_clap", "scorer_judge", "scorer_pc", "separator_0", "separator_3",
                 "control_1", "filter_0", "tiers_2", "evaluate_0", "evaluate_control_1"):
        assert sections_of(step)
    with pytest.raises(KeyError, match="declares no config sections"):
        sections_of("unknown_step")


def test_retrain_lr_scale_lowers_both_arms_and_keys_only_the_retrains(tmp_path):
    from engine.steps import open_run, retrain_config

    cfg = with_overrides(StemforgeConfig(), {"engine.retrain_lr_scale": 0.25})
    ctx = open_run(cfg, tmp_path, "lr")
    assert retrain_config(ctx, None).separator.lr == pytest.approx(cfg.separator.lr * 0.25)
    assert ctx.cfg.separator.lr == StemforgeConfig().separator.lr  # the bootstrap and every lineage keep theirs
    base = StemforgeConfig()
    for step in ("separator_1", "control_1"):
        assert step_key(cfg, step, "r", {}, "v") != step_key(base, step, "r", {}, "v"), step
    for step in ("separator_0", "filter_1", "corpus"):
        assert step_key(cfg, step, "r", {}, "v") == step_key(base, step, "r", {}, "v"), step


def test_retrain_warmup_reaches_every_fine_tune_but_not_the_bootstrap(tmp_path):
    from engine.steps import fine_tune_config, open_run, retrain_config

    cfg = with_overrides(StemforgeConfig(), {"engine.retrain_warmup_steps": 40, "separator.lr_schedule": "cosine"})
    ctx = open_run(cfg, tmp_path, "warm")
    assert retrain_config(ctx, None).separator.warmup_steps == 40
    assert fine_tune_config(cfg).separator.warmup_steps == 40  # the final separator's fine-tune
    assert ctx.cfg.separator.warmup_steps == 0  # the bootstrap trains from scratch without it
    off = StemforgeConfig()
    assert fine_tune_config(off) is off  # no warm-up, no LR scale: the config is passed on untouched
    with pytest.raises(ValueError, match="needs separator.lr_schedule: cosine"):  # the plateau schedule has no warm-up
        with_overrides(cfg, {"separator.lr_schedule": "plateau"})
    base = with_overrides(StemforgeConfig(), {"separator.lr_schedule": "cosine"})
    for step in ("separator_1", "control_2", "final_separator"):
        assert step_key(cfg, step, "r", {}, "v") != step_key(base, step, "r", {}, "v"), step
    for step in ("separator_0", "filter_1", "evaluate_1"):
        assert step_key(cfg, step, "r", {}, "v") == step_key(base, step, "r", {}, "v"), step
