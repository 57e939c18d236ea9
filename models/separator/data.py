"""Training data for the separator: sample streams, shard reading, crops, query sides, silence augmentation.

The trainer consumes *sample streams* of dicts in the shard-reader format
``{"__key__", "mix": f32[T], "target": f32[T], "residual": f32[T], "json": dict}`` mixed by weights, so the
pseudo-label stage can pass ITT / SST streams next to the synthetic shards without touching files.

`read_shard_dir` is a small sequential tar reader for the shard layout of docs/ARCHITECTURE.md; it is what the CLI
uses for `--shards DIR`. (The storage layer's reader offers the same dicts; this one keeps the separator usable on
its own and makes the read order, and therefore resume, exactly reproducible.)
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from storage.audio import decode_audio, resample


class ShardDataError(ValueError):
    def __init__(self, where: str | Path, message: str):
        super().__init__(f"{where}: {message}")


def shard_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise ShardDataError(d, "shard directory does not exist")
    tars = sorted(p for p in d.rglob("*.tar") if not p.name.startswith("."))
    if not tars:
        raise ShardDataError(d, "no .tar shards found")
    return tars


def shard_dir_hash(directory: str | Path) -> str:
    """Lineage hash of a shard store: its index files when present (they list every sample), else the shard
    names and sizes. Recorded in checkpoints so a model can be traced to the exact data it saw."""
    d = Path(directory)
    h = hashlib.sha256()
    indexes = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix in (".json", ".parquet")
                     and "index" in p.name and not p.name.startswith("."))
    if indexes:
        for p in indexes:
            h.update(p.relative_to(d).as_posix().encode())
            h.update(p.read_bytes())
    else:
        for p in shard_files(d):
            h.update(f"{p.relative_to(d).as_posix()}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def _decode_sample(key: str, members: dict[str, bytes], url: str, sample_rate: int | None) -> dict[str, Any]:
    if "json" not in members or "mix.flac" not in members:
        raise ShardDataError(url, f"sample {key!r} lacks mix.flac or json (has {sorted(members)})")
    meta = json.loads(members["json"].decode())
    out: dict[str, Any] = {"__key__": key, "__url__": url, "json": meta}
    sr_seen = None
    for name in ("mix", "target", "residual"):
        blob = members.get(f"{name}.flac")
        if blob is None:
            continue
        audio, sr = decode_audio(blob, f"{url}:{key}.{name}.flac")
        if sample_rate is not None and sr != sample_rate:
            audio = resample(audio, sr, sample_rate)
            sr = sample_rate
        out[name] = audio.astype(np.float32)
        sr_seen = sr
    n = len(out["mix"])
    if "target" not in out:
        if not meta.get("silent_target", False):
            raise ShardDataError(url, f"sample {key!r} has no target.flac and is not marked silent_target")
        out["target"] = np.zeros(n, np.float32)
    out.setdefault("residual", out["mix"] - out["target"])
    meta.setdefault("sample_rate", sr_seen)
    return out


def iter_tar(path: str | Path, sample_rate: int | None = None) -> Iterator[dict[str, Any]]:
    """Samples of one shard in file order; members of one sample are consecutive (WebDataset convention)."""
    path = Path(path)
    try:
        tf = tarfile.open(path, "r")
    except (tarfile.TarError, OSError) as exc:
        raise ShardDataError(path, f"unreadable shard ({exc})") from exc
    with tf:
        key, members = None, {}
        for info in tf:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            k, _, ext = base.partition(".")
            if key is not None and k != key:
                yield _decode_sample(key, members, str(path), sample_rate)
                members = {}
            key = k
            fh = tf.extractfile(info)
            members[ext] = fh.read() if fh else b""
        if key is not None:
            yield _decode_sample(key, members, str(path), sample_rate)


def read_shard_dir(directory: str | Path, sample_rate: int | None = None) -> Iterator[dict[str, Any]]:
    for tar in shard_files(directory):
        yield from iter_tar(tar, sample_rate)


def in_holdout(key: str, every: int) -> bool:
    """Deterministic hold-out by key hash (used when no validation shards are given)."""
    return every > 0 and int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) % every == 0


class ShardStream(torch.utils.data.IterableDataset):
    """A re-iterable stream over one or more shard dirs (each pass reads them again, in the same order).

    As a torch IterableDataset it can feed a DataLoader with several workers: worker w reads shards w, w+n, ...,
    and the DataLoader interleaves workers round-robin, so the order is still fixed for a given worker count.

    `holdout=k` drops the samples `in_holdout(key, k)`; `only_holdout=True` yields only those (the validation side).
    """

    def __init__(self, dirs: list[str | Path], sample_rate: int | None = None, holdout: int = 0, only_holdout: bool = False):
        self.dirs = [Path(d) for d in dirs]
        self.sample_rate = sample_rate
        self.holdout = holdout
        self.only_holdout = only_holdout
        for d in self.dirs:
            shard_files(d)  # fail early on a bad path

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        tars = [t for d in self.dirs for t in shard_files(d)]
        if info is not None:
            tars = tars[info.id::info.num_workers]
        for tar in tars:
            for s in iter_tar(tar, self.sample_rate):
                if self.holdout and in_holdout(s["__key__"], self.holdout) != self.only_holdout:
                    continue
                yield s

    def lineage(self) -> dict[str, str]:
        return {str(d): shard_dir_hash(d) for d in self.dirs}


@dataclass
class Example:
    """One training example after cropping and query selection."""

    mix: np.ndarray
    target: np.ndarray
    positive: str | None
    negative: str | None
    silent: bool


def _label_text(labels: Iterable[str] | None) -> str | None:
    labels = [str(x) for x in (labels or []) if x]
    return ", ".join(labels) if labels else None


def query_texts(meta: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """(positive, negative, mode) as the sample specifies; texts fall back to the label lists."""
    mode = meta.get("query_mode") or "pos"
    if mode not in ("pos", "neg", "posneg"):
        raise ValueError(f"sample {meta.get('key')!r}: query_mode {mode!r} is not pos/neg/posneg")
    pos = meta.get("positive_text") or _label_text(meta.get("positive_labels"))
    neg = meta.get("negative_text") or _label_text(meta.get("negative_labels"))
    if mode == "pos":
        neg = None
    elif mode == "neg":
        pos = None
    if pos is None and neg is None:
        raise ValueError(f"sample {meta.get('key')!r}: no query text or labels for mode {mode!r}")
    return pos, neg, mode


def crop(rng: np.random.Generator, arrays: list[np.ndarray], length: int) -> list[np.ndarray]:
    """The same random crop of every array (zero-padded at the end when shorter than `length`)."""
    n = len(arrays[0])
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return [a[start:start + length] for a in arrays]
    return [np.pad(a, (0, length - n)) for a in arrays]


def make_example(sample: dict[str, Any], rng: np.random.Generator, length: int, query_mix: dict[str, float],
                 silence_prob: float, vocabulary: list[str], phrases: dict[str, list[str]] | None = None) -> Example:
    meta = sample["json"]
    mix, target = crop(rng, [np.asarray(sample["mix"], np.float32), np.asarray(sample["target"], np.float32)], length)
    pos, neg, mode = query_texts(meta)
    silent = bool(meta.get("silent_target", False))
    if mode == "posneg" and query_mix and not silent:
        # ClearSep's query dropout: the same (mix, target) with pos-only / neg-only / both, since the negative
        # side names exactly what is not the target.
        modes = sorted(query_mix)
        p = np.array([query_mix[m] for m in modes], dtype=np.float64)
        choice = modes[int(rng.choice(len(modes), p=p / p.sum()))]
        if choice == "pos":
            neg = None
        elif choice == "neg":
            pos = None
    present = {str(x) for x in (meta.get("target_labels") or []) + (meta.get("residual_labels") or [])
               + (meta.get("positive_labels") or []) + (meta.get("negative_labels") or [])}
    if silence_prob > 0 and not silent and rng.random() < silence_prob:
        absent = [v for v in vocabulary if v not in present]
        if absent:
            # silence augmentation (ClearSep §3.3.1): query an absent class, the target is silence; the negative
            # side (if any) still names sounds that are present.
            pos = absent[int(rng.integers(len(absent)))]
            forms = (phrases or {}).get(pos)
            if forms:
                # ask in the same forms present classes are asked in (label or the shards' phrase), so the gate
                # cannot learn "a bare label means absent"
                pick = int(rng.integers(len(forms) + 1))
                pos = forms[pick - 1] if pick else pos
            target = np.zeros_like(target)
            silent = True
    if silent:
        target = np.zeros_like(target)
    return Example(mix=mix, target=target, positive=pos, negative=neg, silent=silent)


def sample_phrases(samples: Iterable[dict[str, Any]], into: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """label -> the positive texts single-class samples ask for it with (e.g. "dog" -> ["a dog barking"])."""
    out = {k: list(v) for k, v in (into or {}).items()}
    for s in samples:
        meta = s["json"]
        labels, text = meta.get("positive_labels") or [], meta.get("positive_text")
        if len(labels) == 1 and text and text != labels[0]:
            forms = out.setdefault(str(labels[0]), [])
            if text not in forms:
                forms.append(str(text))
                forms.sort()
    return out


def sample_vocabulary(samples: Iterable[dict[str, Any]]) -> list[str]:
    """Every label that names a single class in these samples (the pool for absent-class queries)."""
    vocab: set[str] = set()
    for s in samples:
        meta = s["json"]
        for key in ("target_labels", "residual_labels", "positive_labels", "negative_labels"):
            vocab.update(str(x) for x in (meta.get(key) or []))
    return sorted(vocab)
