"""Write one WebDataset shard: deterministic tar bytes, crash-safe publication, member offsets for the index.

Why not `tarfile.TarFile.addfile` or `webdataset.TarWriter`: both copy every member through a 16 KiB loop and stamp
the current time / user into headers. Here each member is a ustar/pax header built from a fixed `TarInfo` (mtime,
uid/gid 0, empty owner names, mode 0o644) followed by the payload and zero padding, written straight to the file; the
archive ends with the same two zero blocks and record padding `tarfile` writes, so plain `tarfile` and `webdataset`
read it. The same samples therefore give byte-identical shards, and the offsets of every member are known without
re-reading the tar.

A shard is written to `.<name>.<random>.tmp` next to its final path, fsynced and renamed only on `commit()`; an
aborted or killed writer leaves at most a temp file (removed by the next run), never a truncated `.tar` under a final
name, and a writer that received no sample never creates a file at all. A full disk raises
`storage.errors.DiskFullError` naming the shard's final path; the caller's `abort()` then removes the temp file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from storage.atomic import fsync_dir
from storage.errors import disk_full_names, reconstructible

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 20 blocks; tarfile pads the archive end to a whole record
END_OF_ARCHIVE = 2 * BLOCK
TAR_FORMAT = tarfile.PAX_FORMAT
TMP_SUFFIX = ".tmp"


@reconstructible
class SampleError(ValueError):
    """A sample that cannot be stored (bad key, bad member name or value); names the key and the problem."""

    def __init__(self, key: object, message: str):
        self.key = key
        super().__init__(f"sample {key!r}: {message}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps_json(value: Any) -> bytes:
    """Canonical JSON (sorted keys, compact, numpy scalars as Python numbers) so equal dicts give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default,
                      allow_nan=True).encode("utf-8")


def validate_key(key: object) -> str:
    """A WebDataset key: non-empty, no dot (the key/extension split) and no slash or whitespace."""
    if not isinstance(key, str) or not key:
        raise SampleError(key, "__key__ must be a non-empty string")
    for bad, why in ((".", "a dot (webdataset splits key and extension at the first dot)"), ("/", "a slash"),
                     ("\\", "a backslash")):
        if bad in key:
            raise SampleError(key, f"__key__ contains {why}")
    if any(ch.isspace() for ch in key) or not key.isprintable():
        raise SampleError(key, "__key__ contains whitespace or control characters")
    return key


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_:+=,@-]")


def safe_key(text: str) -> str:
    """`text` itself when `validate_key` accepts it, else a key made from it: every character outside
    [A-Za-z0-9_:+=,@-] as '_', then '-' and 10 hex digits of the text's sha256, so distinct ids keep distinct keys.
    Why: tier samples are keyed by candidate ids, which hold users' file names and AudioSet ids
    (`audioset:aaa_30.000-q00`, `fsd50k:my clip.v2-q00`); the sample's JSON keeps the id itself."""
    try:
        return validate_key(text)
    except SampleError:
        pass
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{_KEY_UNSAFE.sub('_', text)}-{digest}"


def encode_members(sample: Mapping[str, Any]) -> tuple[str, list[tuple[str, bytes]]]:
    """Validate a sample dict and return `(key, [(extension, payload), ...])` in a stable (sorted) member order.

    Values: bytes as they are, dict/list as canonical JSON, str as UTF-8. Keys starting with `__` are metadata
    (`__key__`, `__url__`, ...) and are not stored. Arrays are rejected: the producer decides the audio encoding.
    """
    if not isinstance(sample, Mapping):
        raise SampleError("?", f"sample must be a dict, got {type(sample).__name__}")
    key = validate_key(sample.get("__key__"))
    members: list[tuple[str, bytes]] = []
    for ext in sorted(sample):
        if ext.startswith("__"):
            continue
        if not ext or "/" in ext or ext.startswith(".") or ext.endswith(".") or not ext.isprintable():
            raise SampleError(key, f"invalid member extension {ext!r}")
        value = sample[ext]
        if isinstance(value, (bytes, bytearray, memoryview)):
            payload = bytes(value)
        elif isinstance(value, (dict, list)):
            payload = dumps_json(value)
        elif isinstance(value, str):
            payload = value.encode("utf-8")
        else:
            raise SampleError(key, f"member {ext!r} is {type(value).__name__}; expected bytes, dict, list or str "
                                   "(encode audio with storage.audio.encode_audio first)")
        members.append((ext, payload))
    if not members:
        raise SampleError(key, "sample has no members")
    return key, members


def padded(size: int) -> int:
    """Bytes a member payload occupies in the tar (rounded up to whole blocks)."""
    return (size + BLOCK - 1) // BLOCK * BLOCK


@dataclass(frozen=True)
class MemberSpan:
    """Where one member's payload lives inside its shard."""

    name: str  # full member name, e.g. "key.mix.flac"
    offset: int  # byte offset of the payload (tarinfo.offset_data)
    size: int  # payload size in bytes


@dataclass(frozen=True)
class SampleSpan:
    """Where one sample lives inside its shard: [offset, offset+size) is a self-contained run of tar members."""

    key: str
    offset: int
    size: int
    members: tuple[MemberSpan, ...]


@dataclass
class ShardInfo:
    """A committed shard."""

    name: str
    path: Path
    count: int
    bytes: int
    samples: list[SampleSpan] = field(default_factory=list)


_FLUSHER: tuple[int, ThreadPoolExecutor] | None = None
_FLUSHER_LOCK = threading.Lock()


def _flusher() -> ThreadPoolExecutor:
    """One background thread for incremental fdatasync, created lazily per process (a forked child must not reuse
    the parent's executor: its thread does not exist there)."""
    global _FLUSHER
    with _FLUSHER_LOCK:
        if _FLUSHER is None or _FLUSHER[0] != os.getpid():
            _FLUSHER = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-fsync"))
        return _FLUSHER[1]


def _write_all(fd: int, buffers: list[bytes | memoryview]) -> None:
    """`os.writev` until every byte is out (writev may write partially)."""
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


class TarShardWriter:
    """Writes one shard under a temporary name; `commit()` publishes it atomically, `abort()` discards it.

    Why incremental syncing: a plain writer returns as soon as data is in the page cache, while publishing a shard
    safely needs it on disk. A background thread `fdatasync`s the temp file every `sync_every` bytes while the
    producer keeps writing, so the final fsync before the rename only has the tail left to flush.
    """

    def __init__(self, final_path: str | os.PathLike[str], mtime: int = 0, fsync: bool = True,
                 sync_every: int = 8 << 20):
        self.final_path = Path(final_path)
        self.mtime = int(mtime)
        self.fsync = fsync
        self.sync_every = sync_every
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._offset = 0
        self._synced_at = 0
        self._pending: Future | None = None
        self._spans: list[SampleSpan] = []
        self._keys: set[str] = set()

    # -- layout ---------------------------------------------------------------------------------------------------
    def _header(self, name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = self.mtime
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        return info.tobuf(TAR_FORMAT, "utf-8", "surrogateescape")

    def encoded_size(self, key: str, members: list[tuple[str, bytes]]) -> int:
        """Bytes the sample will add to the tar (headers + padded payloads)."""
        return sum(len(self._header(f"{key}.{ext}", len(data))) + padded(len(data)) for ext, data in members)

    @property
    def count(self) -> int:
        return len(self._spans)

    @property
    def bytes_written(self) -> int:
        return self._offset

    def final_size(self, extra: int = 0) -> int:
        """Size of the finished tar if `extra` more bytes of members were added."""
        raw = self._offset + extra + END_OF_ARCHIVE
        return (raw + RECORD - 1) // RECORD * RECORD

    # -- writing --------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.final_path.name}.", suffix=TMP_SUFFIX, dir=self.final_path.parent)
        os.fchmod(fd, 0o644)
        self._tmp = Path(tmp)
        self._fd = fd

    def _wait_sync(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _maybe_sync(self) -> None:
        if not self.fsync or self._offset - self._synced_at < self.sync_every:
            return
        if self._pending is not None and not self._pending.done():
            return
        self._wait_sync()
        self._synced_at = self._offset
        self._pending = _flusher().submit(os.fdatasync, self._fd)

    def add(self, key: str, members: list[tuple[str, bytes]]) -> SampleSpan:
        """Append one already-encoded sample (see `encode_members`); keys must be unique within the shard."""
        if key in self._keys:
            raise SampleError(key, f"duplicate key in shard {self.final_path.name}")
        if self._fd is None:
            self._open()
        start = self._offset
        spans = []
        buffers: list[bytes] = []
        for ext, data in members:
            name = f"{key}.{ext}"
            header = self._header(name, len(data))
            buffers.append(header)
            self._offset += len(header)
            spans.append(MemberSpan(name, self._offset, len(data)))
            buffers.append(data)
            pad = padded(len(data)) - len(data)
            if pad:
                buffers.append(b"\0" * pad)
            self._offset += len(data) + pad
        assert self._fd is not None
        with disk_full_names(self.final_path):
            _write_all(self._fd, buffers)
            span = SampleSpan(key, start, self._offset - start, tuple(spans))
            self._spans.append(span)
            self._keys.add(key)
            self._maybe_sync()
        return span

    def commit(self) -> ShardInfo | None:
        """Finish the archive, fsync and rename it into place. Returns None (and writes nothing) when empty."""
        if self._fd is None:
            return None
        assert self._tmp is not None
        with disk_full_names(self.final_path):
            end = self.final_size() - self._offset
            _write_all(self._fd, [b"\0" * end])
            self._offset += end
            self._wait_sync()
            if self.fsync:
                os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.replace(self._tmp, self.final_path)
        if self.fsync:
            fsync_dir(self.final_path.parent)
        self._tmp = None
        return ShardInfo(self.final_path.name, self.final_path, len(self._spans), self._offset, list(self._spans))

    def abort(self) -> None:
        """Discard the temporary file (no-op when nothing was written)."""
        if self._fd is not None:
            try:
                self._wait_sync()
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> "TarShardWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Leaving the block without commit() (error or not) never publishes a shard implicitly.
        self.abort()
