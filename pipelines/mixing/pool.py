"""Source pools: which clips a recipe may draw, how often, and a decoded-clip cache.

Why a ledger: a 480-clip demo pool mixed into 10k tuples would otherwise reuse the loudest or longest clips far
more than others by chance; `max_uses_per_epoch` caps each clip's uses per epoch, and an epoch ends when a draw can
no longer be satisfied (the ledger is then reset). Draws are class-balanced: first a class, then a clip of it, so
a class with many clips does not dominate.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from storage.audio import SOUNDFILE_EXTS, AudioConfig, load_audio, probe
from storage.manifests import ManifestError, available_columns, iter_rows


class PoolExhausted(RuntimeError):
    """No clip satisfies a draw under the current reuse ledger (the planner starts a new epoch)."""


class PoolError(ValueError):
    """The pool cannot serve a recipe at all (too few classes, empty split); names the source and the need."""


@dataclass(frozen=True)
class SourceEntry:
    clip_id: str
    path: str
    labels: tuple[str, ...]
    domain: str
    duration_s: float
    group: str | None = None  # multitrack song for aligned stems
    active: tuple[float, float] | None = None  # (start_s, end_s) of the sounding part; None = the whole clip

    @property
    def klass(self) -> str:
        """Primary label: the unit of class-balanced drawing and of the distinct-classes rule."""
        return self.labels[0]


class UsageLedger:
    """Counts uses per clip in the current epoch; limit 0 means unlimited."""

    def __init__(self, limit: int):
        self.limit = limit
        self.counts: dict[str, int] = {}
        self.epoch = 0
        self.version = 0  # bumped whenever a clip becomes unavailable or an epoch starts (pools cache on it)

    def available(self, entry: SourceEntry) -> bool:
        return self.limit <= 0 or self.counts.get(entry.clip_id, 0) < self.limit

    def use(self, entries: Iterable[SourceEntry]) -> None:
        for e in entries:
            count = self.counts.get(e.clip_id, 0) + 1
            self.counts[e.clip_id] = count
            if self.limit > 0 and count == self.limit:
                self.version += 1

    def new_epoch(self) -> None:
        self.counts.clear()
        self.epoch += 1
        self.version += 1


def _active(row: dict) -> tuple[float, float] | None:
    """The manifest's active span of a clip when recorded (imports since issue 13), else None."""
    a, b = row.get("active_start_s"), row.get("active_end_s")
    return None if a is None or b is None or b <= a else (float(a), float(b))


class SourcePool:
    """Clips grouped by class; draws respect a ledger and exclusion sets so target and residual classes differ."""

    def __init__(self, entries: Sequence[SourceEntry], name: str = "<pool>"):
        if not entries:
            raise PoolError(f"{name}: the source pool is empty")
        self.name = name
        self.entries = sorted(entries, key=lambda e: e.clip_id)
        self.by_class: dict[str, list[SourceEntry]] = {}
        for e in self.entries:
            self.by_class.setdefault(e.klass, []).append(e)
        self.classes = sorted(self.by_class)
        self.class_domain = {c: self.by_class[c][0].domain for c in self.classes}
        self._multi = {c: any(len(e.labels) > 1 for e in clips) for c, clips in self.by_class.items()}
        self._avail_key: tuple[int, int] | None = None
        self._avail: dict[str, list[SourceEntry]] = {}
        self._domain_classes: dict[tuple[str, ...] | None, list[str]] = {}
        self.groups: dict[str, list[SourceEntry]] = {}
        for e in self.entries:
            if e.group is not None:
                self.groups.setdefault(e.group, []).append(e)

    @classmethod
    def from_manifest(cls, manifest: str | Path, split: str | None = "train") -> "SourcePool":
        """Clean-source pool from a `source_clip` manifest (optionally one split)."""
        try:
            columns = ["clip_id", "path", "labels", "domain", "duration_s", "split"]
            columns += available_columns(manifest, ["active_start_s", "active_end_s"], expect="source_clip")
            rows = list(iter_rows(manifest, columns=columns, expect="source_clip"))
        except ManifestError as exc:
            raise PoolError(str(exc)) from exc
        entries = []
        for row in rows:
            if split and row["split"] != split:
                continue
            if not row["labels"]:
                raise PoolError(f"{manifest}: clip {row['clip_id']} has no labels")
            entries.append(SourceEntry(row["clip_id"], row["path"], tuple(row["labels"]), row["domain"], float(row["duration_s"]),
                                       active=_active(row)))
        if not entries:
            raise PoolError(f"{manifest}: no clips in split {split!r}")
        return cls(entries, name=str(manifest))

    @classmethod
    def from_scenes(cls, manifest: str | Path, split: str | None = "train") -> "SourcePool":
        """In-the-wild pool from a `natural_scene` manifest: labels = the scene's event labels, domain 'wild'."""
        try:
            columns = ["clip_id", "path", "event_labels", "duration_s", "split"]
            columns += available_columns(manifest, ["active_start_s", "active_end_s"], expect="natural_scene")
            rows = list(iter_rows(manifest, columns=columns, expect="natural_scene"))
        except ManifestError as exc:
            raise PoolError(str(exc)) from exc
        entries = [SourceEntry(r["clip_id"], r["path"], tuple(r["event_labels"]), "wild", float(r["duration_s"]), active=_active(r))
                   for r in rows if (not split or r["split"] == split) and r["event_labels"]]
        if not entries:
            raise PoolError(f"{manifest}: no labelled scenes in split {split!r}")
        return cls(entries, name=str(manifest))

    @classmethod
    def from_stems_folder(cls, folder: str | Path, domain: str = "music") -> "SourcePool":
        """Multitrack pool from `folder/<song>/<stem>.<ext>`: label = stem file name, group = song folder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise PoolError(f"{folder}: stems folder does not exist")
        entries = []
        for song in sorted(p for p in folder.iterdir() if p.is_dir()):
            stems = sorted(p for p in song.iterdir() if p.suffix.lower() in SOUNDFILE_EXTS)
            if len(stems) < 2:
                continue
            for stem in stems:
                info = probe(stem)
                entries.append(SourceEntry(f"{song.name}__{stem.stem}", str(stem.resolve()), (stem.stem.replace("_", " "),),
                                           domain, info.duration_s, group=song.name))
        if not entries:
            raise PoolError(f"{folder}: no song folder holds at least two audio stems")
        return cls(entries, name=str(folder))

    def classes_in(self, domains: Sequence[str] | None) -> list[str]:
        key = None if domains is None else tuple(domains)
        if key not in self._domain_classes:
            self._domain_classes[key] = [c for c in self.classes if key is None or self.class_domain[c] in key]
        return self._domain_classes[key]

    def _available(self, ledger: UsageLedger) -> dict[str, list[SourceEntry]]:
        """Usable clips per class, recomputed only when the ledger's availability changed (draws stay O(classes))."""
        key = (id(ledger), ledger.version)
        if self._avail_key != key:
            self._avail = {c: [e for e in clips if ledger.available(e)] for c, clips in self.by_class.items()}
            self._avail_key = key
        return self._avail

    def draw_distinct(self, rng: np.random.Generator, ledger: UsageLedger, n: int, domains: Sequence[str] | None = None,
                      exclude: Iterable[str] = ()) -> list[SourceEntry]:
        """`n` clips of `n` different classes (none in `exclude`, none sharing a label), each usable under the ledger."""
        excluded = set(exclude)
        chosen: list[SourceEntry] = []
        for _ in range(n):
            avail = self._available(ledger)
            options = []
            for c in self.classes_in(domains):
                if c in excluded or not avail[c]:
                    continue
                clips = avail[c]
                if excluded and self._multi[c]:
                    clips = [e for e in clips if not excluded.intersection(e.labels)]
                if clips:
                    options.append(clips)
            if not options:
                raise PoolExhausted(f"{self.name}: no usable clip left for domains {domains} excluding {sorted(excluded)}")
            clips = options[int(rng.integers(len(options)))]
            entry = clips[int(rng.integers(len(clips)))]
            chosen.append(entry)
            excluded.update(entry.labels)
        return chosen

    def require_classes(self, n: int, domains: Sequence[str] | None, recipe: str) -> None:
        have = len(self.classes_in(domains))
        if have < n:
            where = "any domain" if domains is None else f"domain(s) {list(domains)}"
            raise PoolError(f"{self.name}: recipe {recipe} needs {n} distinct classes in {where}, the pool has {have}")


class ClipCache:
    """LRU cache of decoded clips: a recipe draws the same clips repeatedly within an epoch."""

    def __init__(self, audio_cfg: AudioConfig | None = None, capacity: int = 512):
        self.audio_cfg = audio_cfg or AudioConfig()
        self.capacity = capacity
        self._data: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __call__(self, path: str, sample_rate: int) -> np.ndarray:
        key = (path, sample_rate)
        if key in self._data:
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key]
        self.misses += 1
        cfg = self.audio_cfg if self.audio_cfg.sample_rate == sample_rate else self.audio_cfg.model_copy(update={"sample_rate": sample_rate})
        audio = load_audio(path, cfg)
        audio.setflags(write=False)
        self._data[key] = audio
        if len(self._data) > self.capacity:
            self._data.popitem(last=False)
        return audio
