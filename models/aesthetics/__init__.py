"""Production complexity (PC, audiobox-aesthetics scale 1-10; SAM Audio keeps targets with PC < 2.5).

`build_pc(cfg)` returns a scorer with `score(audios, sr) -> np.ndarray` and `info()`.
Backends: `mini` (in-project proxy, `stemforge train pc`) and `audiobox` (local audiobox-aesthetics checkpoint).
"""
from __future__ import annotations

from models.aesthetics.config import PCConfig


_LAZY = {'MiniPCScorer': 'models.aesthetics.scorer', 'build_pc': 'models.aesthetics.scorer'}


def __getattr__(name: str):
    """Heavy members (torch) load on first use, so reading configs (`engine.run_config`) stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["PCConfig", "MiniPCScorer", "build_pc"]
