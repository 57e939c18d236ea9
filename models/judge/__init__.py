"""SAJ-style separation judge: overall / recall / precision / faithfulness on a 1-5 scale.

`build_judge(cfg)` returns a scorer with `score(mixtures, outputs, texts, sr, others=None) -> dict[str, np.ndarray]`
and `info()` (`others`: the mixture's other sound labels, read by a judge trained to read them, `models.judge.prompt`).
Backends: `mini` (in-project, trained by `stemforge train judge`) and `sam` (Meta's release, optional).
"""
from __future__ import annotations

from models.judge.config import JudgeConfig


_LAZY = {'MiniJudgeScorer': 'models.judge.scorer', 'build_judge': 'models.judge.scorer', 'BackendUnavailable': 'models.judge.sam_adapter'}


def __getattr__(name: str):
    """Heavy members (torch) load on first use, so reading configs (`engine.run_config`) stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["JudgeConfig", "MiniJudgeScorer", "build_judge", "BackendUnavailable"]
