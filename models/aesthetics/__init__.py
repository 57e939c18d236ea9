"""Production complexity (PC, audiobox-aesthetics scale 1-10; SAM Audio keeps targets with PC < 2.5).

`build_pc(cfg)` returns a scorer with `score(audios, sr) -> np.ndarray` and `info()`.
Backends: `mini` (in-project proxy, `stemforge train pc`) and `audiobox` (local audiobox-aesthetics checkpoint).
"""
from __future__ import annotations

from models.aesthetics.config import PCConfig
from models.aesthetics.scorer import MiniPCScorer, build_pc

__all__ = ["PCConfig", "MiniPCScorer", "build_pc"]
