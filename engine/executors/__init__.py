"""Executors: run stage specs over keyed tasks into sinks (`base.py` is the contract; `inprocess.py`, `ray_data.py`)."""
from engine.executors.base import (Chain, ChainError, Executor, ExecutorError, RunSummary, StageSetupError, StageSpec,
                                   Task, build_executor, check_chain, fuse_groups)

__all__ = ["Chain", "ChainError", "Executor", "ExecutorError", "RunSummary", "StageSetupError", "StageSpec", "Task",
           "build_executor", "check_chain", "fuse_groups"]
