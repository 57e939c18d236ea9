"""SAJ-style separation judge: overall / recall / precision / faithfulness on a 1-5 scale.

`build_judge(cfg)` returns a scorer with `score(mixtures, outputs, texts, sr) -> dict[str, np.ndarray]` and
`info()`. Backends: `mini` (in-project, trained by `stemforge train judge`) and `sam` (Meta's release, optional).
"""
from __future__ import annotations

from models.judge.config import JudgeConfig
from models.judge.scorer import MiniJudgeScorer, build_judge
from models.judge.sam_adapter import BackendUnavailable

__all__ = ["JudgeConfig", "MiniJudgeScorer", "build_judge", "BackendUnavailable"]
