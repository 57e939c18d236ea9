"""CLAP text-audio agreement scorers: `build_clap(cfg)` returns a backend (`mini`, `laion` or `hf`) with
`embed_text`, `embed_audio`, `score(texts, audios, sr)` (cosine) and `info()`; `ClapScorer` is the batch stage.

Nothing heavy is imported here: `engine.run_config` imports `models.clap.config`, which runs this file, and loading a
config must not pay for torch. The names below resolve lazily.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"ClapBackend": "models.clap.base", "ClapScorer": "models.clap.base", "build_clap": "models.clap.base",
         "CheckpointError": "models.clap.checkpoint", "ClapConfig": "models.clap.config", "MiniClapTrainConfig": "models.clap.config"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models.clap' has no attribute {name!r}")
