"""Training data for the separator: indexable sample sources, crops, query sides, silence augmentation.

The trainer draws from *sources*: sized, indexable collections (`len(src)`, `src[i]`) of sample dicts in the shard
reader's format ``{"__key__", "mix": f32[T], "target": f32[T], "residual": f32[T], "json": dict}``, mixed by weight.
Index-based access is what makes training deterministic and seekable: the sample drawn at global step s, slot b is
a pure function of the seed and the source lengths (models/separator/train.py: `DrawPlan`), so a resumed run or a
rank of a distributed run finds its samples without replaying a stream.

`ShardSource` reads shard stores through `storage`'s index and reader (random access by sample number: the index
gives every member's byte range); an in-memory list (SST samples) and the ITT builder of pipelines/training_data.py
are sources as they are.

Query wording: a sample stores its query as text rendered from its labels (`positive_text` = the label phrases).
`make_example` draws, per example and from the example's seeded generator, the written form each label-derived side
is asked in (the stored phrase, the bare label in any case with `_` / `-` / space, a paraphrase template, the AudioSet
display name: `models.labels.query_form`), so the separator answers users who write `violin` or `Alarm_Clock`
instead of the phrase. Custom texts (caption phrases, free-text prompts) are kept as stored.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

from models.labels import display, phrase_for, query_form_text, slug
from storage.audio import resample
from storage.errors import reconstructible


@reconstructible
class ShardDataError(ValueError):
    def __init__(self, where: str | Path, message: str):
        super().__init__(f"{where}: {message}")


class SampleSource(Protocol):
    """What the trainer draws from: a fixed number of samples per epoch, each addressable by number."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...


def shard_dir_hash(directory: str | Path) -> str:
    """Lineage hash of a shard store: its index parts (they list every sample with its byte range). Recorded in
    checkpoints so a model can be traced to the exact data it saw."""
    from storage.shards.index import index_parts

    d = Path(directory)
    h = hashlib.sha256()
    for part in index_parts(d):
        h.update(part.relative_to(d).as_posix().encode())
        h.update(part.read_bytes())
    return h.hexdigest()[:16]


def in_holdout(key: str, every: int) -> bool:
    """Deterministic hold-out by key hash (used when no validation shards are given)."""
    return every > 0 and int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) % every == 0


_INDEX_COLUMNS = ["key", "shard", "members", "member_offsets", "member_sizes", "json"]


class ShardSource:
    """Random access to the samples of one or more shard stores, in (store, sample number) order.

    Reads through `storage.shards`: the Parquet index locates every member of sample i, `read_member` seeks to it,
    `decode_sample` decodes it (the storage reader's decoding, errors naming shard and member). Audio is resampled to
    `sample_rate` when given; a missing target of a `silent_target` sample is zeros. `holdout=k` drops the samples
    `in_holdout(key, k)`; `only_holdout=True` keeps only those (the validation side). Only the index is held in
    memory, so a source is cheap to build and to send to another process.
    """

    def __init__(self, dirs: Sequence[str | Path], sample_rate: int | None = None, holdout: int = 0,
                 only_holdout: bool = False):
        from storage.shards.index import ShardIndexError, read_index

        self.dirs = [Path(d) for d in dirs]
        self.sample_rate = sample_rate
        self._rows: list[tuple[int, str, str, list[str], list[int], list[int]]] = []
        self._json: list[str | None] = []
        for n, d in enumerate(self.dirs):
            if not d.is_dir():
                raise ShardDataError(d, "shard store directory does not exist")
            try:
                table = read_index(d, columns=_INDEX_COLUMNS).to_pylist()
            except ShardIndexError as exc:
                raise ShardDataError(d, f"no shard index: not a shard store ({exc})") from exc
            for r in table:
                if holdout and in_holdout(r["key"], holdout) != only_holdout:
                    continue
                self._rows.append((n, r["key"], r["shard"], list(r["members"]), list(r["member_offsets"]),
                                   list(r["member_sizes"])))
                self._json.append(r["json"])

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from storage.shards.index import read_member
        from storage.shards.reader import ShardReadError, decode_sample

        n, key, shard, members, offsets, sizes = self._rows[i]
        store = self.dirs[n]
        row = {"key": key, "shard": shard, "members": members, "member_offsets": offsets, "member_sizes": sizes}
        raw: dict[str, Any] = {"__key__": key, "__url__": str(store / shard)}
        for name in members:
            raw[name.split(".", 1)[1]] = read_member(store, row, name)
        try:
            out = decode_sample(raw)
        except ShardReadError as exc:
            raise ShardDataError(exc.shard, f"member {exc.member}: {exc.reason}") from exc
        if "mix" not in out or "json" not in out:
            raise ShardDataError(raw["__url__"], f"sample {key!r} lacks mix.flac or json (has {sorted(raw)})")
        sr = int(out.pop("sample_rate"))
        if "target" not in out:
            if not out["json"].get("silent_target", False):
                raise ShardDataError(raw["__url__"], f"sample {key!r} has no target.flac and is not marked silent_target")
            out["target"] = np.zeros_like(out["mix"])
        if f"{key}.residual.flac" not in members:  # written only when non-silent; the reader fills zeros
            out["residual"] = out["mix"] - out["target"]
        if self.sample_rate is not None and sr != self.sample_rate:
            for name in ("mix", "target", "residual"):
                out[name] = resample(out[name], sr, self.sample_rate).astype(np.float32)
            sr = self.sample_rate
        out["json"].setdefault("sample_rate", sr)
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def metas(self) -> list[dict[str, Any]]:
        """Every sample's JSON from the index, without touching the tars (vocabulary, phrases)."""
        return [json.loads(j) if j else {} for j in self._json]

    def lineage(self) -> dict[str, str]:
        return {str(d): shard_dir_hash(d) for d in self.dirs}


def read_samples(dirs: Sequence[str | Path], sample_rate: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` samples (all when None) of shard stores, decoded (validation sets, tier tracks)."""
    src = ShardSource(dirs, sample_rate)
    n = len(src) if limit is None else min(limit, len(src))
    return [src[i] for i in range(n)]


def source_metas(source: Any) -> list[dict[str, Any]]:
    """The JSON of every sample of a source: `source.metas()` when it has one (no decoding), else each item's."""
    if hasattr(source, "metas"):
        return list(source.metas())
    return [source[i]["json"] for i in range(len(source))]


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


def _label_derived(text: str | None, labels: list[str]) -> bool:
    """Whether a stored query text is just its labels rendered (bare, display or phrase form), so another written
    form of the same labels asks the same thing; a custom text (a caption phrase, an operator prompt) is kept."""
    if not text or not labels:
        return False
    return text in {", ".join(labels), ", ".join(display(x) for x in labels), ", ".join(phrase_for(x) for x in labels)}


def make_example(sample: dict[str, Any], rng: np.random.Generator, length: int, query_mix: dict[str, float],
                 silence_prob: float, vocabulary: list[str], phrases: dict[str, list[str]] | None = None,
                 query_forms: bool = True) -> Example:
    """Crop, query sides (ClearSep query dropout), silence augmentation and, with `query_forms`
    (`separator.query_forms`), the written form of each label-derived query side (models/labels.py), all drawn
    from `rng` (the forms last, so the crop and the sides are the same with and without them)."""
    forms = query_forms
    meta = sample["json"]
    mix, target = crop(rng, [np.asarray(sample["mix"], np.float32), np.asarray(sample["target"], np.float32)], length)
    pos, neg, mode = query_texts(meta)
    pos_labels = [str(x) for x in (meta.get("positive_labels") or []) if x]
    neg_labels = [str(x) for x in (meta.get("negative_labels") or []) if x]
    pos_forms, neg_forms = _label_derived(pos, pos_labels), _label_derived(neg, neg_labels)
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
        present_slugs = {slug(x) for x in present}
        absent = [v for v in vocabulary if slug(v) not in present_slugs]
        if absent:
            # silence augmentation (ClearSep §3.3.1): query an absent class, the target is silence; the negative
            # side (if any) still names sounds that are present.
            pos = absent[int(rng.integers(len(absent)))]
            pos_labels, pos_forms = [pos], True
            if not forms:
                # ask in the same forms present classes are asked in (label or the shards' phrase), so the gate
                # cannot learn "a bare label means absent"
                choices = (phrases or {}).get(pos)
                if choices:
                    pick = int(rng.integers(len(choices) + 1))
                    pos = choices[pick - 1] if pick else pos
            target = np.zeros_like(target)
            silent = True
    if forms:
        # every label-derived side, present or absent class alike, in a drawn written form (so neither the gate nor
        # the mask can key on one wording)
        if pos is not None and pos_forms:
            pos = query_form_text(pos_labels, rng, phrases)
        if neg is not None and neg_forms:
            neg = query_form_text(neg_labels, rng, phrases)
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
