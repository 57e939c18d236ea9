"""Import real datasets into the corpus manifest layout.

A layout reader (`pipelines/corpus/layouts.py`) streams `Candidate`s (clip id, absolute path, labels, split);
this module validates each file with `storage.audio.scan_audio` (streamed), dedupes by content hash against what is already
in the output manifests, routes single-label clips to the clean-source pool and multi-label clips to the
natural-scene pool, and quarantines every bad file with its reason. A bad file never stops an import.

Audio is never copied: manifests point at the original files (absolute paths).

Hostile input (what `tests/chaos/test_hostile_corpus.py` throws at it): a file is checked in one streamed pass
(`storage.audio.scan_audio`: blocks, never the whole clip; content hash in 1 MiB chunks), so memory stays bounded
whatever a file's length; a clip longer than `max_seconds` is quarantined `too_long` from its header, because
every later stage decodes a clip whole. A path that resolves outside the dataset root (a symlink, `../` in a
metadata row) is `outside_root` unless `allow_outside_root`; a name or label that is not valid UTF-8 (the manifest
could not hold a path that reopens the file) is `bad_name`; a device, FIFO or socket is `unreadable` (never opened).

Label columns (`normalise_labels`): `labels` (and a scene's `event_labels`) hold slugs, the key every stage
matches on (`alarm_clock`, `domestic_animals_and_pets`); `label_names` the display names (the AudioSet name where
the class is in the ontology, else the slug with spaces); `label_mids` the AudioSet MIDs (from the dataset, else
looked up by slug in the ontology; null where none matches); `label_ids` the ids as the dataset writes them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from models.labels import display
from pipelines.corpus.config import ImportConfig
from pipelines.corpus.ontology import Ontology, label_slug, packaged_ontology
from pipelines.mixing.loudness import ACTIVE_RANGE_DB
from storage import manifests as mf
from storage.atomic import atomic_write_text
from storage.audio import AudioConfig, AudioError, AudioScan, scan_audio

log = logging.getLogger("stemforge.corpus.import")

IMPORT_STAGE = "import"

# Word-level cues for the clip domain; anything else is "sound". Config `label_domains` overrides per label.
_SPEECH_WORDS = {"speech", "speaking", "speaker", "conversation", "narration", "monologue", "talk", "talking",
                 "whispering", "babbling", "male speech", "female speech", "child speech"}
_MUSIC_WORDS = {"music", "musical", "guitar", "piano", "violin", "fiddle", "cello", "flute", "drum", "drums",
                "bass", "saxophone", "trumpet", "trombone", "organ", "harp", "synthesizer", "orchestra", "singing",
                "song", "choir", "keyboard", "clarinet", "ukulele", "banjo", "mandolin", "harmonica", "accordion",
                "cymbal", "tabla", "sitar", "marimba", "xylophone", "glockenspiel", "vibraphone", "bell", "instrument",
                "vocals", "vocal", "accompaniment"}


class LayoutError(ValueError):
    """The dataset root does not have the expected layout (message names the missing or malformed file)."""


@dataclass
class Candidate:
    """One clip announced by a layout reader; `problem` = (kind, message) when its metadata row is unusable."""

    clip_id: str
    path: Path
    labels: list[str]
    label_ids: list[str]
    split: str | None = None
    problem: tuple[str, str] | None = None


@dataclass
class ImportReport:
    """Counts and hours of one import run (what `import_report.json` holds)."""

    layout: str
    dataset: str
    root: str
    out: str
    candidates: int = 0
    imported_sources: int = 0
    imported_scenes: int = 0
    duplicate: int = 0
    quarantined_by_kind: Counter = field(default_factory=Counter)
    hours: dict[str, float] = field(default_factory=lambda: {"sources": 0.0, "scenes": 0.0})
    hours_per_class: dict[str, dict[str, float]] = field(default_factory=lambda: {"sources": defaultdict(float), "scenes": defaultdict(float)})
    parent_labels_removed: int = 0
    notes: list[str] = field(default_factory=list)
    manifest_totals: dict[str, Any] = field(default_factory=dict)
    stems: dict[str, Any] | None = None  # `stems` layout: audit stems, sum / not_sum counts, the threshold

    @property
    def imported(self) -> int:
        return self.imported_sources + self.imported_scenes

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_kind.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "dataset": self.dataset,
            "root": self.root,
            "out": self.out,
            "counts": {
                "candidates": self.candidates,
                "imported": self.imported,
                "imported_sources": self.imported_sources,
                "imported_scenes": self.imported_scenes,
                "duplicate": self.duplicate,
                "quarantined": self.quarantined,
                "quarantined_by_kind": dict(sorted(self.quarantined_by_kind.items())),
            },
            "parent_labels_removed": self.parent_labels_removed,
            "hours": {k: round(v / 3600.0, 6) for k, v in self.hours.items()},
            "hours_per_class": {pool: {k: round(v / 3600.0, 6) for k, v in sorted(d.items())} for pool, d in self.hours_per_class.items()},
            "manifest_totals": self.manifest_totals,
            "notes": self.notes,
            **({"stems": self.stems} if self.stems is not None else {}),
        }

    def table(self) -> str:
        """A short human-readable summary for stderr."""
        lines = [
            f"import {self.layout} from {self.root}",
            f"  candidates   {self.candidates}",
            f"  imported     {self.imported} ({self.imported_sources} clean sources, {self.imported_scenes} scenes)",
            f"  duplicate    {self.duplicate}",
            f"  quarantined  {self.quarantined}" + "".join(f"\n    {k:<18} {v}" for k, v in sorted(self.quarantined_by_kind.items())),
            f"  hours        sources {self.hours['sources'] / 3600:.4f}, scenes {self.hours['scenes'] / 3600:.4f}",
        ]
        if self.stems is not None:
            lines.append(f"  audit stems  {self.stems['audit_stems']} (mixtures: {self.stems['sum']} sum, "
                         f"{self.stems['not_sum']} not_sum at {self.stems['sum_min_db']:g} dB)")
        return "\n".join(lines)


def hash_split(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split from a seeded hash of the clip id (stable when the dataset grows or is re-ordered)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def label_domain(label: str, overrides: dict[str, str] | None = None) -> str:
    """speech | music | sound for one label name (overrides first, then word cues, default sound)."""
    if overrides:
        by_slug = {label_slug(k): v for k, v in overrides.items()}
        if label_slug(label) in by_slug:
            return by_slug[label_slug(label)]
    text = label.lower().replace("_", " ")
    if text in _SPEECH_WORDS:
        return "speech"
    words = set(re.findall(r"[a-z]+", text))
    if words & {"speech", "speaking", "conversation", "narration", "talking", "whispering"}:
        return "speech"
    if words & _MUSIC_WORDS:
        return "music"
    return "sound"


def clip_domain(labels: list[str], overrides: dict[str, str] | None = None) -> str:
    """A single domain for a clip: the common domain of its labels, else sound."""
    domains = {label_domain(label, overrides) for label in labels}
    return domains.pop() if len(domains) == 1 else "sound"


def normalise_labels(names: list[str], ids: list[str], ontology: Ontology) -> tuple[list[str], list[str], list[str | None], list[str]]:
    """(slugs, display names, MIDs, dataset ids) of one clip's labels, duplicates (same slug) dropped."""
    slugs: list[str] = []
    shown: list[str] = []
    mids: list[str | None] = []
    kept_ids: list[str] = []
    for i, name in enumerate(names):
        key = label_slug(name)
        if not key or key in slugs:
            continue
        raw_id = ids[i] if i < len(ids) else name
        mid = raw_id if ontology.name(raw_id) is not None else ontology.mid_of(key)
        slugs.append(key)
        shown.append(ontology.name(mid) if mid is not None else display(key))
        mids.append(mid)
        kept_ids.append(raw_id)
    return slugs, shown, mids, kept_ids


def _existing_keys(man: Path) -> tuple[set[str], set[str]]:
    """Content hashes and clip ids already imported (two streamed columns, never the whole manifest)."""
    hashes: set[str] = set()
    ids: set[str] = set()
    for pool in ("sources", "scenes"):
        directory = man / pool
        if directory.is_dir() and any(directory.glob("*.parquet")):
            for batch in mf.open_dataset(directory).to_batches(columns=["content_hash", "clip_id"]):
                hashes.update(batch.column(0).to_pylist())
                ids.update(batch.column(1).to_pylist())
    return hashes, ids


def _existing_quarantine(man: Path) -> set[tuple[str, str]]:
    directory = man / "quarantine"
    if not (directory.is_dir() and any(directory.glob("*.parquet"))):
        return set()
    return {(row["path"], row["error_kind"]) for row in mf.iter_rows(directory, columns=["path", "error_kind"], expect="quarantine")}


def _manifest_totals(man: Path) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for pool in ("sources", "scenes"):
        directory = man / pool
        clips, seconds = 0, 0.0
        if directory.is_dir() and any(directory.glob("*.parquet")):
            for row in mf.iter_rows(directory, columns=["duration_s"]):
                clips += 1
                seconds += row["duration_s"]
        totals[pool] = {"clips": clips, "hours": round(seconds / 3600.0, 6)}
    return totals


class _Writer:
    """Buffers manifest rows and appends them as part files every `batch` rows (bounded memory, crash-safe)."""

    def __init__(self, directory: Path, schema, batch: int):
        self.directory, self.schema, self.batch = directory, schema, batch
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            mf.append_rows(self.directory, self.schema, self.rows)
            self.rows = []


class Quarantine:
    """The quarantine manifest of one import: every rejected (file, kind) counted in the report and recorded once,
    across re-imports too (shared by every layout's importer)."""

    def __init__(self, man: Path, report: ImportReport, batch_rows: int) -> None:
        self.report = report
        self.seen = _existing_quarantine(man)
        self.writer = _Writer(man / "quarantine", mf.QUARANTINE_SCHEMA, batch_rows)

    def reject(self, path: Path, kind: str, message: str) -> None:
        self.report.quarantined_by_kind[kind] += 1
        log.debug("quarantine %s: %s: %s", path, kind, message)
        key = (mf.storable_text(str(path)), kind)  # as the quarantine table stores it (non-UTF-8 names escaped)
        if key not in self.seen:
            self.seen.add(key)
            self.writer.add(mf.quarantine_row(path, IMPORT_STAGE, kind, message))

    def flush(self) -> None:
        self.writer.flush()


def finish_import(report: ImportReport, out: Path) -> ImportReport:
    """Totals of the manifests as they now stand, and `import_report.json` (atomically)."""
    report.manifest_totals = _manifest_totals(out / "manifests")
    atomic_write_text(out / "import_report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def run_import(candidates: Iterable[Candidate], out_dir: str | Path, *, layout: str, dataset: str, root: str | Path,
               audio_cfg: AudioConfig, import_cfg: ImportConfig, seed: int = 0,
               progress: Callable[[int], None] | None = None, parent_labels_removed: int | Callable[[], int] = 0,
               notes: list[str] | None = None, ontology: Ontology | None = None) -> ImportReport:
    """Validate, dedupe and register every candidate; write manifests and `import_report.json` into `out_dir`.

    `ontology` names labels and finds their MIDs (default: the ontology shipped with stemforge)."""
    ontology = ontology or packaged_ontology()
    out = Path(out_dir).resolve()
    man = out / "manifests"
    man.mkdir(parents=True, exist_ok=True)
    report = ImportReport(layout=layout, dataset=dataset, root=str(Path(root).resolve()), out=str(out), notes=list(notes or []))
    seen, seen_ids = _existing_keys(man)
    sources = _Writer(man / "sources", mf.SOURCE_CLIP_SCHEMA, import_cfg.batch_rows)
    scenes = _Writer(man / "scenes", mf.NATURAL_SCENE_SCHEMA, import_cfg.batch_rows)
    quarantine = Quarantine(man, report, import_cfg.batch_rows)
    reject = quarantine.reject

    try:
        for cand in candidates:
            report.candidates += 1
            try:
                _import_one(cand, report, seen, seen_ids, sources, scenes, reject, audio_cfg, import_cfg, dataset, seed,
                            ontology, Path(report.root))
            finally:
                if progress is not None:
                    progress(1)
    finally:
        # Whatever happens (even Ctrl-C), rows already validated are kept: a re-run dedupes them.
        for writer in (sources, scenes, quarantine):
            writer.flush()
    report.parent_labels_removed = parent_labels_removed() if callable(parent_labels_removed) else parent_labels_removed
    return finish_import(report, out)


def not_utf8(*texts: str) -> bool:
    """True when a text holds lone surrogates: bytes that were not UTF-8 (os.fsdecode / surrogateescape), which a
    Parquet string column cannot hold and an escaped copy would not reopen."""
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def outside_root(path: Path, root: Path, import_cfg: ImportConfig) -> str | None:
    """The quarantine message when `path` (resolved) lies outside the dataset `root`, unless that is allowed."""
    if import_cfg.allow_outside_root or path.is_relative_to(root):
        return None
    return (f"resolves to {path}, outside the dataset root {root} (a symlink or '..' in the metadata); "
            "set corpus.importer.allow_outside_root to import it")


def path_problem(path: Path) -> tuple[str, str] | None:
    """(kind, message) when `path` (resolved) is not a regular file that can be opened; checked before any byte is
    read (a FIFO would block the hash, a device never end)."""
    try:
        if not path.exists():
            return ("missing", "file does not exist")
        if path.is_dir():
            return ("unreadable", "is a directory")
        if not path.is_file():
            return ("unreadable", "not a regular file (device, FIFO or socket)")
    except OSError as exc:  # a symlink loop, a name too long
        return ("unreadable", f"cannot stat: {exc}")
    return None


def _import_one(cand: Candidate, report: ImportReport, seen: set[str], seen_ids: set[str], sources: _Writer, scenes: _Writer,
                reject: Callable[[Path, str, str], None], audio_cfg: AudioConfig, import_cfg: ImportConfig,
                dataset: str, seed: int, ontology: Ontology, root: Path) -> None:
    path = cand.path
    if cand.problem is not None:
        reject(path, *cand.problem)
        return
    if not_utf8(str(path), cand.clip_id, *cand.labels, *cand.label_ids):
        reject(path, "bad_name", "file name or label is not valid UTF-8 (rename the file / fix the metadata encoding)")
        return
    # quarantine rows name the path as the dataset gives it (the symlink, the '../' row); the manifest the real file
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        reject(path, "unreadable", f"cannot resolve: {exc}")
        return
    outside = outside_root(real, root, import_cfg)
    if outside is not None:
        reject(path, "outside_root", outside)
        return
    problem = path_problem(real)
    if problem is not None:
        reject(path, *problem)
        return
    path = real
    labels, names, mids, ids = normalise_labels(cand.labels, cand.label_ids, ontology)
    if not labels:
        reject(path, "no_labels", "metadata gives this clip no labels")
        return
    try:
        digest = mf.file_hash(path)
    except OSError as exc:
        reject(path, "unreadable", f"cannot read file: {exc}")
        return
    if digest in seen:
        report.duplicate += 1
        return
    if cand.clip_id in seen_ids:
        reject(path, "duplicate_id", f"clip id {cand.clip_id!r} is already in the manifest with other content (file changed since it was imported?)")
        return
    try:
        # Validate at the native rate, streamed: the import only needs to know the file is usable, not to resample it.
        scan = scan_audio(path, audio_cfg, max_seconds=import_cfg.max_seconds)
    except AudioError as err:
        reject(path, err.kind, err.message)
        return
    split = cand.split or hash_split(f"{dataset}:{cand.clip_id}", seed, import_cfg.val_fraction, import_cfg.test_fraction)
    row = clip_row(cand.clip_id, path, scan.sample_rate, scan.frames, scan_span(scan), digest, dataset, split,
                   (labels, names, mids, ids), import_cfg)
    seen.add(digest)
    seen_ids.add(cand.clip_id)
    if len(labels) == 1:
        sources.add(row)
        report.imported_sources += 1
        pool = "sources"
    else:
        row.update({"event_labels": list(labels), "events": None, "caption": None, "audit_dir": None})
        scenes.add(row)
        report.imported_scenes += 1
        pool = "scenes"
    report.hours[pool] += row["duration_s"]
    for label in labels:
        report.hours_per_class[pool][label] += row["duration_s"]


def scan_span(scan: AudioScan, range_db: float = ACTIVE_RANGE_DB) -> tuple[float, float] | None:
    """`pipelines.mixing.loudness.active_span` of the scanned clip, from the frame powers the scan kept (the same
    frames and rule, so a streamed import records the span a whole-clip decode would)."""
    powers = scan.powers
    if powers.size == 0 or float(powers.max()) <= 0.0:
        return None
    on = np.flatnonzero(powers >= float(powers.max()) * 10.0 ** (-range_db / 10.0))
    n, sr = scan.frame, scan.sample_rate
    return round(on[0] * n / sr, 6), round(min(scan.frames / sr, (on[-1] + 1) * n / sr), 6)


def clip_row(clip_id: str, path: Path, sample_rate: int, frames: int, span: tuple[float, float] | None, digest: str,
             dataset: str, split: str, label_columns: tuple[list[str], list[str], list[str | None], list[str]],
             import_cfg: ImportConfig) -> dict[str, Any]:
    """The `_CLIP_FIELDS` of one validated clip (`frames` at its native rate, `span` its active span or None)."""
    labels, names, mids, ids = label_columns
    return {
        "clip_id": clip_id, "path": str(Path(path).resolve()), "sample_rate": int(sample_rate), "num_frames": int(frames),
        "duration_s": frames / float(sample_rate), "labels": list(labels), "label_ids": list(ids),
        "label_names": list(names), "label_mids": list(mids),
        "active_start_s": span[0] if span else None, "active_end_s": span[1] if span else None,
        "domain": clip_domain(labels, import_cfg.label_domains), "split": split, "content_hash": digest,
        "dataset": dataset,
    }


def iter_limited(items: Iterable[Candidate], limit: int | None) -> Iterator[Candidate]:
    """Stop after `limit` candidates (for trial imports of a huge dataset)."""
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item


def import_reader(reader: Any, out_dir: str | Path, *, root: str | Path, audio_cfg: AudioConfig, import_cfg: ImportConfig,
                  seed: int = 0, limit: int | None = None, progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import what `layouts.open_layout` returned, whatever the layout: clips through `run_import`, the `stems`
    layout's mixture folders through `stems.import_stems`. The one call `stemforge corpus import` and a run's
    own import share."""
    from pipelines.corpus.stems import StemsReader, import_stems

    if isinstance(reader, StemsReader):
        return import_stems(iter_limited(reader.candidates(), limit), out_dir, dataset=reader.dataset, root=root,
                            audio_cfg=audio_cfg, import_cfg=import_cfg, seed=seed, progress=progress, notes=reader.notes)
    return run_import(iter_limited(reader.candidates(), limit), out_dir, layout=reader.layout, dataset=reader.dataset,
                      root=root, audio_cfg=audio_cfg, import_cfg=import_cfg, seed=seed, progress=progress,
                      parent_labels_removed=lambda: reader.parents_removed, notes=reader.notes, ontology=reader.ontology)
