"""Run-level config plumbing: scorer step caps and their validation."""
from __future__ import annotations

import pytest

from engine.model_steps import capped
from engine.run_config import StemforgeConfig, with_overrides


def test_scorer_step_caps_apply_only_to_the_run():
    cfg = with_overrides(StemforgeConfig(), {"engine.scorer_steps": {"judge_pretrain": 7, "judge_finetune": 11, "pc": 5, "clap": 3}})
    assert capped(cfg, "judge").pretrain_steps == 7 and capped(cfg, "judge").finetune_steps == 11
    assert capped(cfg, "pc").steps == 5 and capped(cfg, "clap").steps == 3
    assert cfg.judge.pretrain_steps != 7  # the section itself is untouched


def test_unknown_scorer_cap_is_an_error():
    cfg = with_overrides(StemforgeConfig(), {"engine.scorer_steps": {"judg": 3}})
    with pytest.raises(ValueError, match="unknown key"):
        capped(cfg, "judge")
