"""Read shard stores: a webdataset pipeline that decodes FLAC to float32, shuffles across shards, splits shards over
DataLoader workers, and reports (or skips) corrupt shards and members by name.

Why our own tar expansion stage instead of `webdataset.tarfile_to_samples`: webdataset's handlers see an exception
without the member being read, and its stream reader stops silently at a truncation that falls on a member
boundary. Here every error names the shard and the member, and a shard must end with its end-of-archive blocks.
The stages are assembled with `webdataset.DataPipeline`, so they compose with any webdataset filter (`.batched`,
`wds.map`, ...), and `ShardIterableDataset` is a plain torch `IterableDataset`.
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import soundfile as sf
from storage.errors import reconstructible

log = logging.getLogger("stemforge.shards")

OnError = Literal["raise", "skip"]
AUDIO_EXTS = (".flac", ".wav")


@reconstructible
class ShardReadError(RuntimeError):
    """A corrupt or truncated shard or member; `shard` and `member` say exactly where."""

    def __init__(self, shard: str, member: str, message: str):
        self.shard = shard
        self.member = member
        self.reason = message
        super().__init__(f"{shard}: member {member}: {message}")


# -- shard lists ------------------------------------------------------------------------------------------------------
def list_shards(store: str | os.PathLike[str]) -> list[str]:
    """Final shard paths of a store directory, sorted (temp files of a running writer are never listed)."""
    store = Path(store)
    if not store.is_dir():
        raise FileNotFoundError(f"{store}: shard store directory does not exist")
    return [str(p) for p in sorted(store.glob("*.tar")) if not p.name.startswith(".")]


def resolve_urls(urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """A store directory, one shard path, or a list of shard paths -> list of shard paths."""
    if isinstance(urls, (str, os.PathLike)):
        path = Path(urls)
        found = list_shards(path) if path.is_dir() else [str(path)]
    else:
        found = []
        for u in urls:
            found.extend(list_shards(u) if Path(u).is_dir() else [str(u)])
    if not found:
        raise FileNotFoundError(f"{urls}: no shards (*.tar) found")
    return found


def _worker() -> tuple[int, int]:
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0, 1
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def shards_for_epoch(shards: Sequence[str], shuffle: bool, seed: int, epoch: int, worker: int = 0,
                     num_workers: int = 1, rank: int = 0, world_size: int = 1) -> list[str]:
    """This worker's shards for `epoch`: one seeded permutation shared by all nodes and workers, split by node
    (`rank` of `world_size`) and then by DataLoader worker, so each shard (and thus each sample) is read exactly
    once per epoch across the whole job."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    order = list(shards)
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    return order[rank::world_size][worker::num_workers]


# -- tar expansion ----------------------------------------------------------------------------------------------------
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key/extension split


def _split_name(name: str) -> tuple[str, str] | None:
    match = _KEY_EXT.match(name)
    return None if match is None else (match.group(1), match.group(2))


def iter_members(shard: str) -> Iterator[tuple[str, bytes]]:
    """Regular members `(name, payload)` of one tar, raising `ShardReadError` naming the member on any damage."""
    size = os.path.getsize(shard)
    last = None
    current = "<first header>"
    with open(shard, "rb") as fh:
        try:
            tf = tarfile.open(fileobj=fh, mode="r|")
            for info in tf:
                current = info.name
                if not info.isreg():
                    continue
                data = tf.extractfile(info).read()  # type: ignore[union-attr]
                if len(data) != info.size:
                    raise tarfile.ReadError(f"unexpected end of data ({len(data)} of {info.size} bytes)")
                yield info.name, data
                last = info.name
                current = f"<header after {last}>"
            end = tf.offset
        except ShardReadError:
            raise
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ShardReadError(shard, current, f"{type(exc).__name__}: {exc}") from exc
        # tarfile stops quietly at a missing, short or invalid header after the first one; a complete archive
        # ends with two zero blocks exactly there.
        fh.seek(end)
        tail = fh.read(2 * tarfile.BLOCKSIZE)
        if end + 2 * tarfile.BLOCKSIZE > size:
            raise ShardReadError(shard, current, f"truncated at byte {size}: the end-of-archive blocks are missing")
        if tail.strip(b"\0"):
            raise ShardReadError(shard, current, f"corrupt tar header at byte {end} (not a member, not end-of-archive)")


def iter_raw_samples(shard: str, on_error: OnError = "raise") -> Iterator[dict[str, Any]]:
    """Group a shard's consecutive members by key into `{"__key__", "__url__", "<ext>": bytes}` samples.

    With `on_error="skip"`, damage logs a warning and ends this shard (a tar stream cannot resynchronise); the
    sample being assembled when the damage was found is dropped, samples before it are kept.
    """
    sample: dict[str, Any] | None = None
    try:
        for name, data in iter_members(shard):
            parts = _split_name(name)
            if parts is None:
                continue
            key, ext = parts
            if sample is None or sample["__key__"] != key:
                if sample is not None:
                    yield sample
                sample = {"__key__": key, "__url__": shard}
            if ext in sample:
                raise ShardReadError(shard, name, "duplicate member within one sample")
            sample[ext] = data
    except ShardReadError as exc:
        if on_error != "skip":
            raise
        log.warning("skipping rest of shard: %s", exc)
        return
    if sample is not None:
        yield sample


# -- decoding ---------------------------------------------------------------------------------------------------------
def decode_audio_member(shard: str, member: str, data: bytes) -> tuple[np.ndarray, int]:
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad data
        raise ShardReadError(shard, member, f"cannot decode audio: {exc}") from exc
    audio = audio.T
    return (audio[0] if audio.shape[0] == 1 else audio), int(sr)


def decode_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw sample -> `{"__key__", "__url__", "mix", "target", "residual", "json", ...}` with float32 audio.

    Every `*.flac`/`*.wav` member becomes an array named without its extension (so later stages' `scene.flac` comes
    back as `scene`); `json` becomes a dict; other members stay bytes. A missing residual is zeros like the mix.
    """
    shard, key = raw.get("__url__", "?"), raw.get("__key__", "?")
    out: dict[str, Any] = {"__key__": key, "__url__": shard}
    for ext, data in raw.items():
        if ext.startswith("__"):
            continue
        member = f"{key}.{ext}"
        if ext.endswith(AUDIO_EXTS):
            out[ext.rsplit(".", 1)[0]], out["sample_rate"] = decode_audio_member(shard, member, data)
        elif ext == "json":
            try:
                out["json"] = json.loads(data)
            except ValueError as exc:
                raise ShardReadError(shard, member, f"invalid JSON: {exc}") from exc
        else:
            out[ext] = data
    if "mix" in out and "residual" not in out:
        out["residual"] = np.zeros_like(out["mix"])
    return out


# -- pipeline stages --------------------------------------------------------------------------------------------------
def _torch_iterable_base() -> type:
    from torch.utils.data import IterableDataset

    return IterableDataset


class _EpochShards(_torch_iterable_base()):  # type: ignore[misc]
    """Pipeline source: this worker's shards for the epoch, as webdataset `dict(url=...)` items."""

    def __init__(self, shards: Sequence[str], shuffle: bool, seed: int, epoch: int, rank: int, world_size: int):
        super().__init__()
        self.shards, self.shuffle, self.seed, self.epoch = list(shards), shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict[str, str]]:
        worker, workers = _worker()
        for url in shards_for_epoch(self.shards, self.shuffle, self.seed, self.epoch, worker, workers, self.rank,
                                    self.world_size):
            yield {"url": url}


def _expand(on_error: OnError) -> Callable[[Iterable[dict[str, str]]], Iterator[dict[str, Any]]]:
    def stage(src: Iterable[dict[str, str]]) -> Iterator[dict[str, Any]]:
        for item in src:
            yield from iter_raw_samples(item["url"], on_error)
    return stage


def _shuffle(bufsize: int, seed: int, epoch: int) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """Buffer shuffle whose RNG is created at iteration time, so every DataLoader worker gets its own stream."""
    def stage(src: Iterable[Any]) -> Iterator[Any]:
        worker, _ = _worker()
        rng = random.Random(f"{seed}:{epoch}:{worker}")
        buf: list[Any] = []
        for item in src:
            if len(buf) < bufsize:
                buf.append(item)
                continue
            i = rng.randrange(len(buf))
            buf[i], item = item, buf[i]
            yield item
        rng.shuffle(buf)
        yield from buf
    return stage


def _decode(on_error: OnError) -> Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]]:
    def stage(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for raw in src:
            try:
                yield decode_sample(raw)
            except ShardReadError as exc:
                if on_error != "skip":
                    raise
                log.warning("skipping sample: %s", exc)
    return stage


def iter_samples(urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, shuffle: int = 0,
                 shuffle_shards: bool | None = None, seed: int = 0, epoch: int = 0, on_error: OnError = "raise",
                 decode: bool = True, rank: int = 0, world_size: int = 1) -> Any:
    """A `webdataset.DataPipeline` over the samples of `urls` (store dir, shard path or list).

    `shuffle` is the sample shuffle buffer (0 = file order); shards are shuffled per (seed, epoch) when
    `shuffle_shards` (default: when `shuffle > 0`). Under a DataLoader, each worker reads a disjoint subset of shards;
    `rank`/`world_size` split shards across nodes of a distributed job the same way.
    """
    import webdataset as wds

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    shards = resolve_urls(urls)
    if shuffle_shards is None:
        shuffle_shards = shuffle > 0
    stages: list[Any] = [_EpochShards(shards, shuffle_shards, seed, epoch, rank, world_size), _expand(on_error)]
    if shuffle > 0:
        stages.append(_shuffle(shuffle, seed, epoch))
    if decode:
        stages.append(_decode(on_error))
    return wds.DataPipeline(*stages)


class ShardIterableDataset(_torch_iterable_base()):  # type: ignore[misc]
    """torch `IterableDataset` over a shard store; with `DataLoader(num_workers=n)` each sample appears once per
    epoch. Call `set_epoch(e)` between epochs to reshuffle deterministically. In a process that has run a Prefect
    flow use `multiprocessing_context="forkserver"`: forked workers inherit Prefect's thread-exit hooks and exit 1."""

    def __init__(self, urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], shuffle_buffer: int = 0,
                 seed: int = 0, epoch: int = 0, on_error: OnError = "raise", shuffle_shards: bool | None = None):
        super().__init__()
        self.shards = resolve_urls(urls)
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = epoch
        self.on_error = on_error
        self.shuffle_shards = shuffle_shards

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(iter_samples(self.shards, shuffle=self.shuffle_buffer, shuffle_shards=self.shuffle_shards,
                                 seed=self.seed, epoch=self.epoch, on_error=self.on_error))
