"""The `stems` import layout: evaluation sets of real mixtures, each with one file per labelled source.

Why: natural-scene evaluation needs ground truth, and the demo corpus is the only other source of it. This layout
registers a user's mixtures exactly as the demo registers its scenes (a `natural_scene` row per mixture, an
`audit_stem` row per source), so the engine's natural evaluation (`engine.evaluation.natural_items`) reads them
unchanged.

Accepted layout (ROOT = --root):
  ROOT/<mixture>/mixture.<ext>  or  ROOT/<mixture>/mix.<ext>     the mixture (exactly one)
  ROOT/<mixture>/<label>.<ext>                                  one file per labelled source, MUSDB-style
                                                                (vocals.wav, drums.wav, bass.wav, other.wav)
  ROOT/<mixture>/stem_<label>.<ext>  (or stem-<label>.<ext>)     the same, with a `stem_` prefix
  ROOT/<train|val|test>/<mixture>/...                           optional: split folders fix the splits; otherwise
                                                                every mixture gets `corpus.importer.stems_split`
                                                                (default test; `hash` = seeded hash split)
<ext> is any audio extension the importer reads; other files (README, json) are ignored. Labels are slugs of the
file name (`Door Knock.wav` -> `door_knock`). A stem named `background` counts in the sum check but is never
queried (like the demo's ambience stem); a silent stem (source absent from that mixture) is kept as an audit
stem but is not one of the mixture's event labels.

Checks per mixture (a failure quarantines the whole mixture with a message naming the file):
  * one mixture file, at least one stem, no label given twice;
  * every file readable (storage.audio checks), the mixture not silent;
  * one sample rate and one length (exact frame count) for the mixture and all its stems;
  * the sum: residual SDR = 10 log10(|mix|^2 / |mix - sum(stems)|^2) on the mono downmix. At or above
    `corpus.importer.stems_sum_min_db` (default 30 dB; 16-bit stems that sum exactly reach ~80 dB) the mixture is
    recorded `stems_relation = "sum"`, below it `"not_sum"`: a real recording with bleed or mastering is still
    imported (its stems remain the reference), but says so. `sum_sdr_db` is capped at 150 dB (exact sums).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pipelines.corpus.config import ImportConfig
from pipelines.corpus.importers import (ImportReport, LayoutError, Quarantine, _existing_keys, _Writer, clip_row,
                                        finish_import, hash_split, normalise_labels)
from pipelines.corpus.ontology import Ontology, label_slug, packaged_ontology
from pipelines.mixing.loudness import active_span
from storage import manifests as mf
from storage.audio import AudioConfig, AudioError, load_audio, probe

log = logging.getLogger("stemforge.corpus.import")

MIXTURE_NAMES = ("mixture", "mix")
STEM_PREFIXES = ("stem_", "stem-")
BACKGROUND_LABEL = "background"  # the demo's name for the ambience stem: in the sum, never queried
SUM_SDR_CAP_DB = 150.0
EXPECTS = ("stems layout expects ROOT/<mixture>/mixture.<ext> (or mix.<ext>) and one <label>.<ext> or "
           "stem_<label>.<ext> per source")


@dataclass
class StemsMixture:
    """One mixture folder as found on disk (validated by `import_stems`)."""

    clip_id: str
    folder: Path
    split: str | None
    mixture: list[Path]  # candidates named mixture.* / mix.* (exactly one is valid)
    stems: list[tuple[str, str, Path]]  # (slug label, label as written, path)


@dataclass
class StemsReader:
    layout: str
    dataset: str
    root: Path
    total: int
    mixtures: list[StemsMixture]
    notes: list[str] = field(default_factory=list)
    parents_removed: int = 0

    def candidates(self) -> Iterator[StemsMixture]:
        return iter(self.mixtures)


def stem_label(path: Path) -> str:
    """The label as written in a stem's file name: `stem_Door-Knock.wav` -> `Door-Knock`."""
    name = path.stem
    for prefix in STEM_PREFIXES:
        if name.lower().startswith(prefix):
            return name[len(prefix):]
    return name


def _audio_files(folder: Path) -> list[Path]:
    from pipelines.corpus.layouts import AUDIO_EXTS

    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTS)


def _scan(folder: Path, clip_id: str, split: str | None) -> StemsMixture:
    files = _audio_files(folder)
    mixture = [p for p in files if p.stem.lower() in MIXTURE_NAMES]
    stems = sorted(((label_slug(stem_label(p)), stem_label(p), p) for p in files if p not in mixture), key=lambda s: (s[0], s[2].name))
    return StemsMixture(clip_id, folder.resolve(), split, mixture, stems)


def stems_layout(root: Path, cfg: ImportConfig) -> StemsReader:
    """Find the mixture folders of ROOT (see the module docstring); raises LayoutError naming what is missing."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise LayoutError(f"{root}/<mixture>/: no mixture folder found ({EXPECTS})")
    split_layout = all(p.name in ("train", "val", "test") for p in subdirs)
    groups = [(d.name, m) for d in subdirs for m in sorted(d.iterdir()) if m.is_dir() and not m.name.startswith(".")] \
        if split_layout else [(None, m) for m in subdirs]
    dataset = root.name or "stems"
    mixtures = []
    for split, folder in groups:
        rel = folder.relative_to(root).as_posix()
        if split is None and cfg.stems_split != "hash":
            split = cfg.stems_split
        mixtures.append(_scan(folder, f"{dataset}:{rel}", split))
    if not any(m.mixture for m in mixtures):
        raise LayoutError(f"{groups[0][1]}/mixture.<ext>: not found, nor in any other folder of {root} ({EXPECTS})")
    reader = StemsReader("stems", dataset, root, len(mixtures), mixtures)
    reader.notes.append(f"stems summing to the mixture within {cfg.stems_sum_min_db:g} dB residual SDR are 'sum', others 'not_sum'")
    return reader


def sum_sdr_db(mixture: np.ndarray, stems: Iterable[np.ndarray]) -> float:
    """10 log10(|mix|^2 / |mix - sum|^2) in float64, capped at SUM_SDR_CAP_DB (an exact sum)."""
    mix = np.asarray(mixture, dtype=np.float64)
    total = np.zeros_like(mix)
    for s in stems:
        total += s
    err = float(np.sum((mix - total) ** 2))
    sig = float(np.sum(mix ** 2))
    if err <= sig * 10.0 ** (-SUM_SDR_CAP_DB / 10.0):
        return SUM_SDR_CAP_DB
    return round(10.0 * np.log10(sig / err), 3)


class _Rejected(Exception):
    def __init__(self, path: Path, kind: str, message: str):
        super().__init__(message)
        self.path, self.kind, self.message = path, kind, message


def _load(path: Path, audio_cfg: AudioConfig, allow_silent: bool, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode one file whole (the sum check needs every sample); a file over `max_seconds` is refused from its
    header first, so a stray hours-long recording is never decoded."""
    try:
        info = probe(path)
        if max_seconds is not None and info.duration_s > max_seconds:
            raise AudioError(path, "too_long", f"{info.duration_s:.1f} s > max_seconds={max_seconds:g} (header; not decoded)")
        cfg = audio_cfg.model_copy(update={"sample_rate": info.sample_rate, "allow_silent": allow_silent})
        return load_audio(path, cfg), info.sample_rate
    except AudioError as err:
        raise _Rejected(path, err.kind, err.message) from None


def _check(m: StemsMixture, audio_cfg: AudioConfig, max_seconds: float | None) -> tuple[Path, np.ndarray, int, list[tuple[str, str, Path, np.ndarray]], float]:
    """Validate one mixture folder; returns (mixture path, mixture, rate, [(slug, raw, path, audio)], sum SDR)."""
    if not m.mixture:
        raise _Rejected(m.folder, "no_mixture", f"{m.folder}/mixture.<ext>: not found ({EXPECTS})")
    if len(m.mixture) > 1:
        raise _Rejected(m.folder, "ambiguous_mixture", f"{m.folder}: several mixture files {[p.name for p in m.mixture]}; keep one")
    if not m.stems:
        raise _Rejected(m.folder, "no_stems", f"{m.folder}/<label>.<ext>: no stem file next to {m.mixture[0].name} ({EXPECTS})")
    seen: dict[str, Path] = {}
    for key, raw, path in m.stems:
        if not key:
            raise _Rejected(path, "bad_stem_name", f"{path}: no label in the file name ({EXPECTS})")
        if key in seen:
            raise _Rejected(path, "duplicate_stem", f"{path}: label {key!r} also given by {seen[key].name}")
        seen[key] = path
    mix_path = m.mixture[0]
    mix, sr = _load(mix_path, audio_cfg, allow_silent=False, max_seconds=max_seconds)
    stems = []
    for key, raw, path in m.stems:
        audio, rate = _load(path, audio_cfg, allow_silent=True, max_seconds=max_seconds)
        if rate != sr:
            raise _Rejected(path, "stem_rate_mismatch", f"{path}: {rate} Hz but the mixture {mix_path.name} is {sr} Hz "
                                                        "(stems layout needs one sample rate per mixture)")
        if audio.shape[-1] != mix.shape[-1]:
            raise _Rejected(path, "stem_length_mismatch", f"{path}: {audio.shape[-1]} frames but the mixture {mix_path.name} "
                                                          f"has {mix.shape[-1]} (stems layout needs equal lengths)")
        stems.append((key, raw, path, audio))
    return mix_path, mix, sr, stems, sum_sdr_db(mix, (s[3] for s in stems))


def import_stems(mixtures: Iterable[StemsMixture], out_dir: str | Path, *, dataset: str, root: str | Path,
                 audio_cfg: AudioConfig, import_cfg: ImportConfig, seed: int = 0,
                 progress: Callable[[int], None] | None = None, notes: list[str] | None = None,
                 ontology: Ontology | None = None) -> ImportReport:
    """Check and register every mixture folder: rows in manifests/scenes and manifests/audit, bad folders in
    manifests/quarantine, counts in import_report.json (under "stems": audit stems, sum / not_sum)."""
    ontology = ontology or packaged_ontology()
    out = Path(out_dir).resolve()
    man = out / "manifests"
    man.mkdir(parents=True, exist_ok=True)
    report = ImportReport(layout="stems", dataset=dataset, root=str(Path(root).resolve()), out=str(out), notes=list(notes or []))
    stats = {"audit_stems": 0, "sum": 0, "not_sum": 0, "silent_stems": 0, "sum_min_db": import_cfg.stems_sum_min_db}
    seen, seen_ids = _existing_keys(man)
    scenes = _Writer(man / "scenes", mf.NATURAL_SCENE_SCHEMA, import_cfg.batch_rows)
    audit = _Writer(man / "audit", mf.AUDIT_STEM_SCHEMA, import_cfg.batch_rows)
    quarantine = Quarantine(man, report, import_cfg.batch_rows)
    try:
        for m in mixtures:
            report.candidates += 1
            try:
                _import_mixture(m, report, stats, seen, seen_ids, scenes, audit, audio_cfg, import_cfg, dataset, seed, ontology)
            except _Rejected as rej:
                quarantine.reject(rej.path, rej.kind, rej.message)
            finally:
                if progress is not None:
                    progress(1)
    finally:
        # audit rows before scene rows: after a crash between the two a scene row never lacks its stems (a re-run
        # dedupes the scene and would not add them again).
        for writer in (audit, scenes, quarantine):
            writer.flush()
    report.stems = stats
    return finish_import(report, out)


def _import_mixture(m: StemsMixture, report: ImportReport, stats: dict[str, Any], seen: set[str], seen_ids: set[str],
                    scenes: _Writer, audit: _Writer, audio_cfg: AudioConfig, import_cfg: ImportConfig, dataset: str,
                    seed: int, ontology: Ontology) -> None:
    digest = ""
    if len(m.mixture) == 1 and m.mixture[0].is_file():
        digest = mf.file_hash(m.mixture[0])
        if digest in seen:
            report.duplicate += 1
            return
        if m.clip_id in seen_ids:
            raise _Rejected(m.mixture[0], "duplicate_id", f"mixture id {m.clip_id!r} is already in the manifest with other "
                                                          "content (file changed since it was imported?)")
    mix_path, mix, sr, stems, sdr = _check(m, audio_cfg, import_cfg.max_seconds)
    sounding = [(key, raw, path, a) for key, raw, path, a in stems if key != BACKGROUND_LABEL and np.any(a)]
    stats["silent_stems"] += sum(1 for s in stems if not np.any(s[3]))
    if not sounding:
        raise _Rejected(m.folder, "no_stems", f"{m.folder}: every source stem is silent or background ({EXPECTS})")
    labels, names, mids, ids = normalise_labels([s[1] for s in sounding], [s[1] for s in sounding], ontology)
    split = m.split or hash_split(f"{dataset}:{m.clip_id}", seed, import_cfg.val_fraction, import_cfg.test_fraction)
    row = clip_row(m.clip_id, mix_path, sr, int(mix.shape[-1]), active_span(mix, sr), digest, dataset, split,
                   (labels, names, mids, ids), import_cfg)
    events = []
    for key, _raw, _path, a in sounding:
        span = active_span(a, sr)
        if span is not None:
            events.append({"label": key, "onset_s": span[0], "offset_s": span[1]})
    relation = "sum" if sdr >= import_cfg.stems_sum_min_db else "not_sum"
    row.update({"event_labels": list(labels), "events": sorted(events, key=lambda e: (e["onset_s"], e["label"])),
                "caption": None, "audit_dir": str(m.folder), "stems_relation": relation, "sum_sdr_db": sdr})
    for key, _raw, path, _a in stems:
        audit.add({"scene_id": m.clip_id, "label": key, "path": str(path.resolve()), "source_clip_id": None})
    scenes.add(row)
    seen.add(digest)
    seen_ids.add(m.clip_id)
    stats["audit_stems"] += len(stems)
    stats[relation] += 1
    report.imported_scenes += 1
    report.hours["scenes"] += row["duration_s"]
    for label in labels:
        report.hours_per_class["scenes"][label] += row["duration_s"]
    if relation == "not_sum":
        log.info("%s: stems do not sum to the mixture (residual SDR %.1f dB < %g dB): recorded as not_sum",
                 mix_path, sdr, import_cfg.stems_sum_min_db)
