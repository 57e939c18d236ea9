"""Every step starts from the same random and threading state, whichever process runs it and whatever ran before.

Why: a step that re-runs after a kill runs in a fresh process, a scorer may run as a Ray task or in the driver, and
the separator trainer sets torch's thread count for the whole process. Torch seeds itself randomly at process start
(a model built before a function seeds it differs per process) and float reductions depend on the thread count, so
without this a resumed run computed other numbers than an uninterrupted one (tests/chaos found it). Each step now
seeds `random`, NumPy's legacy global generator and torch from `(run.seed, step name)` and runs torch on
`separator.threads` intra-op threads before its work starts.
"""
from __future__ import annotations

import hashlib


def step_seed(seed: int, step: str) -> int:
    """A 63-bit seed of one step of one run (stable across processes and machines)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{step}".encode()).digest()[:8], "big") >> 1


def seed_step(seed: int, step: str, threads: int) -> None:
    """Seed the global generators for `step` and fix torch's intra-op threads (see the module docstring)."""
    import random

    import numpy as np
    import torch

    s = step_seed(seed, step)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    torch.set_num_threads(max(1, int(threads)))
