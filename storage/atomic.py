"""Crash-safe file writes.

Every artefact stemforge produces is written under a temporary name in the destination directory, fsynced and
renamed, so a reader (or a resumed run) never sees a half-written file under its final name, not even when the disk
fills up mid-write (the temporary file is removed and the error names the final path).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from storage.errors import disk_full_names


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Persist a rename: on POSIX the directory entry itself must be flushed."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str = "", fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success fsync it and rename it into place.

    The temporary name starts with a dot and ends in `.tmp` so globbing for final outputs never sees it.
    On error the temporary file is removed and the final name is left untouched; a full disk is raised as
    `storage.errors.DiskFullError` naming `final`. Pass `fsync=False` when the caller already flushed the file to
    disk itself (the directory entry is still synced).
    """
    final = Path(final)
    with disk_full_names(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f"{suffix}.tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            if fsync and tmp.exists():
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing that becomes `final` only when the block succeeds."""
    with atomic_path(final, fsync=False) as tmp:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(final, "wb") as fh:
        fh.write(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))
