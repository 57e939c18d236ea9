"""Publish a finished checkpoint under its final name without a window where a reader sees half a file."""
from __future__ import annotations

import shutil
from pathlib import Path

from storage.atomic import atomic_path


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)
