"""The code version recorded in every checkpoint and shard sample's lineage.

Why the git hash too: during development the package version stays fixed while the code changes; the short hash
tells which code produced a sample or a checkpoint.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """stemforge version plus the git short hash when the code runs from a checkout."""
    try:
        from importlib.metadata import version

        base = version("stemforge")
    except Exception:
        base = "0+unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return f"{base}+g{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return base
