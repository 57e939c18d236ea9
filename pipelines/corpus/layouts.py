"""Readers for the dataset layouts `stemforge corpus import` understands.

Each reader checks the layout up front (raising `LayoutError` naming the missing file) and then streams
`Candidate`s row by row, so a metadata file with millions of rows is never loaded whole. A malformed metadata
row becomes a candidate with a `problem` (it is quarantined, the import goes on).

Labels: readers announce labels as the dataset writes them (`label_ids` = the dataset's own ids: MIDs for
fsd50k/audioset, the raw category or folder name otherwise); the importer turns them into the manifest's label
columns (`labels` = slugs, `label_names`, `label_mids`; see importers.normalise_labels).

Layouts:
- esc50:    ROOT/meta/esc50.csv (filename, fold, category, ...) and ROOT/audio/<filename>.
            Folds in `esc50_test_folds` -> test, `esc50_val_folds` -> val, the rest -> train.
- fsd50k:   ROOT/ground_truth/dev.csv (fname, labels, mids, split) and/or eval.csv (fname, labels, mids); clips in
            ROOT/FSD50K.dev_audio|dev_audio|dev/<fname>.wav and ROOT/FSD50K.eval_audio|eval_audio|eval/<fname>.wav.
            eval -> test, dev split column train/val. FSD50K labels include ancestors; parents of other labels
            of a clip are removed with the ontology (--ontology, else ROOT/ontology.json, else the shipped one).
- audioset: ROOT/*segments*.csv (`YTID, start_seconds, end_seconds, "mid,mid"`, '#' comment lines) plus the
            ontology (--ontology, else ROOT/ontology.json, else the shipped one). Audio under ROOT/audio/ (else
            ROOT/), found by file stem `<YTID>_<start>` (start as written, in whole seconds or in milliseconds),
            `<YTID>_<start>_<end>` or `<YTID>`, each optionally prefixed with "Y".
            CSVs named *eval* -> test; other clips get a seeded hash split into train/val.
- folders:  ROOT/<class>/**/<audio file>, or ROOT/<train|val|test>/<class>/**/<audio file> to fix the splits.
- stems:    ROOT/<mixture>/{mixture|mix}.<ext> + one file per source; see pipelines/corpus/stems.py.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from pipelines.corpus.config import ImportConfig
from pipelines.corpus.importers import Candidate, LayoutError
from pipelines.corpus.ontology import Ontology, packaged_ontology

if TYPE_CHECKING:
    from pipelines.corpus.stems import StemsReader

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64", ".wma"}
LAYOUTS = ("esc50", "fsd50k", "audioset", "folders", "stems")


@dataclass
class LayoutReader:
    """A streamed dataset: `candidates()` yields clips; `total` (when cheap to know) sizes the progress bar."""

    layout: str
    dataset: str
    root: Path
    total: int | None
    _iter: Iterator[Candidate]
    notes: list[str] = field(default_factory=list)
    ontology: Ontology | None = None
    parents_removed: int = 0

    def candidates(self) -> Iterator[Candidate]:
        return self._iter


def _count_data_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip() and not line.lstrip().startswith(b"#")) - 1


def _open_csv(path: Path) -> tuple[csv.DictReader, object]:
    # surrogateescape: a non-UTF-8 byte in a row reaches the importer (which quarantines that row as bad_name)
    # instead of a UnicodeDecodeError ending the whole import
    fh = open(path, newline="", encoding="utf-8", errors="surrogateescape")
    reader = csv.DictReader(fh)
    if reader.fieldnames is None:
        fh.close()
        raise LayoutError(f"{path}: empty CSV (no header)")
    return reader, fh


def _shape_problem(path: Path, line_no: int, row: dict) -> tuple[str, str] | None:
    """bad_metadata when a row has more fields than the header (csv puts them under None: an unquoted comma shifts
    every later column) or fewer (missing values come back as None)."""
    if row.get(None):
        return ("bad_metadata", f"{path}:{line_no}: {len(row[None])} field(s) more than the header's {len(row) - 1}")
    missing = [k for k, v in row.items() if v is None]
    if missing:
        return ("bad_metadata", f"{path}:{line_no}: missing field(s) {missing}")
    return None


def _require_columns(path: Path, reader: csv.DictReader, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise LayoutError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")


def load_ontology(root: Path, ontology_path: str | Path | None) -> Ontology:
    """--ontology when given (it must exist), else ROOT/ontology.json, else the ontology shipped with stemforge."""
    if ontology_path:
        path = Path(ontology_path)
        if not path.is_file():
            raise LayoutError(f"{path}: ontology file not found (given with --ontology)")
        return Ontology.load(path)
    if (root / "ontology.json").is_file():
        return Ontology.load(root / "ontology.json")
    return packaged_ontology()


# ---------------------------------------------------------------------------------------------------------------


def esc50(root: Path, cfg: ImportConfig) -> LayoutReader:
    meta = root / "meta" / "esc50.csv"
    expects = "esc50 layout expects audio/ and meta/esc50.csv"
    if not (root / "audio").is_dir():
        raise LayoutError(f"{root / 'audio'}: not found ({expects})")
    if not meta.is_file():
        raise LayoutError(f"{meta}: not found ({expects})")
    reader, fh = _open_csv(meta)
    _require_columns(meta, reader, ("filename", "fold", "category"))
    fh.close()

    def rows() -> Iterator[Candidate]:
        reader, fh = _open_csv(meta)
        with fh:  # type: ignore[attr-defined]
            for line_no, row in enumerate(reader, start=2):
                name = (row.get("filename") or "").strip()
                path = root / "audio" / name
                category = (row.get("category") or "").strip()
                shape = _shape_problem(meta, line_no, row)
                if shape is not None:
                    yield Candidate(f"esc50:{name or line_no}", path, [], [], problem=shape)
                    continue
                try:
                    fold = int(row.get("fold") or "")
                except ValueError:
                    yield Candidate(f"esc50:{name or line_no}", path, [], [], problem=("bad_metadata", f"{meta}:{line_no}: fold {row.get('fold')!r} is not an integer"))
                    continue
                if not name:
                    yield Candidate(f"esc50:line{line_no}", meta, [], [], problem=("bad_metadata", f"{meta}:{line_no}: empty filename"))
                    continue
                split = "test" if fold in cfg.esc50_test_folds else "val" if fold in cfg.esc50_val_folds else "train"
                labels = [category] if category else []
                yield Candidate(f"esc50:{Path(name).stem}", path, labels, [category] if category else [], split)

    return LayoutReader("esc50", "esc50", root, _count_data_lines(meta), rows())


# ---------------------------------------------------------------------------------------------------------------


def _first_dir(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root / names[0]


def fsd50k(root: Path, cfg: ImportConfig, ontology_path: str | Path | None = None) -> LayoutReader:
    gt = root / "ground_truth"
    parts = [(gt / "dev.csv", "dev"), (gt / "eval.csv", "eval")]
    present = [(p, kind) for p, kind in parts if p.is_file()]
    if not present:
        where = f"{gt}: not found" if not gt.is_dir() else f"{gt}: neither dev.csv nor eval.csv found"
        raise LayoutError(f"{where} (fsd50k layout expects ground_truth/dev.csv and/or ground_truth/eval.csv, "
                          "audio in FSD50K.dev_audio/ and FSD50K.eval_audio/)")
    for path, kind in present:
        reader, fh = _open_csv(path)
        _require_columns(path, reader, ("fname", "labels", "mids"))
        fh.close()
    ontology = load_ontology(root, ontology_path)
    result = LayoutReader("fsd50k", "fsd50k", root, sum(_count_data_lines(p) for p, _ in present), iter(()), ontology=ontology)
    result.notes.append(f"parent labels removed with the ontology {ontology.source}")
    audio_dirs = {"dev": _first_dir(root, ("FSD50K.dev_audio", "dev_audio", "dev")),
                  "eval": _first_dir(root, ("FSD50K.eval_audio", "eval_audio", "eval"))}
    for (_, kind) in present:
        if not audio_dirs[kind].is_dir():
            raise LayoutError(f"{audio_dirs[kind]}: not found (fsd50k layout expects the {kind} audio in "
                              f"FSD50K.{kind}_audio/, {kind}_audio/ or {kind}/ next to ground_truth/)")

    def rows() -> Iterator[Candidate]:
        for csv_path, kind in present:
            reader, fh = _open_csv(csv_path)
            with fh:  # type: ignore[attr-defined]
                for line_no, row in enumerate(reader, start=2):
                    fname = (row.get("fname") or "").strip()
                    path = audio_dirs[kind] / f"{fname}.wav"
                    names = [x.strip() for x in (row.get("labels") or "").split(",") if x.strip()]
                    mids = [x.strip() for x in (row.get("mids") or "").split(",") if x.strip()]
                    clip_id = f"fsd50k:{fname or f'{kind}-line{line_no}'}"
                    shape = _shape_problem(csv_path, line_no, row)
                    if shape is not None:
                        yield Candidate(clip_id, path, [], [], problem=shape)
                        continue
                    if not fname or len(names) != len(mids):
                        yield Candidate(clip_id, path, [], [], problem=("bad_metadata", f"{csv_path}:{line_no}: empty fname or labels/mids of different length"))
                        continue
                    unknown = [m for m in mids if ontology.name(m) is None]
                    if unknown:  # FSD50K's vocabulary is AudioSet's: an id the ontology lacks is a broken row
                        yield Candidate(clip_id, path, [], [], problem=("unknown_label", f"{csv_path}:{line_no}: label id(s) {unknown} not in {ontology.source}"))
                        continue
                    if kind == "eval":
                        split = "test"
                    else:
                        raw = (row.get("split") or "").strip().lower()
                        split = {"train": "train", "val": "val", "valid": "val", "validation": "val"}.get(raw)
                    kept = ontology.remove_ancestors(mids)
                    result.parents_removed += len(dict.fromkeys(mids)) - len(kept)
                    by_mid = dict(zip(mids, names))
                    names = [by_mid[m] for m in kept]
                    mids = kept
                    yield Candidate(clip_id, path, names, mids, split)

    result._iter = rows()
    return result


# ---------------------------------------------------------------------------------------------------------------


def _index_audio(directory: Path) -> dict[str, Path]:
    """Map file stem -> path for every audio file below `directory` (one directory walk, no per-clip stat)."""
    index: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in AUDIO_EXTS:
                index.setdefault(stem, Path(dirpath) / name)
    return index


def _audioset_stems(ytid: str, start: str, end: str) -> list[str]:
    """File stems that common AudioSet downloaders use for one segment, most specific first."""
    starts = [start]
    try:
        value = float(start)
        starts += [str(int(value)), str(int(round(value * 1000)))]
    except ValueError:
        pass
    stems: list[str] = []
    for prefix in ("", "Y"):  # the "Y" prefix comes from the original AudioSet release tooling
        stems += [f"{prefix}{ytid}_{s}" for s in starts] + [f"{prefix}{ytid}_{start}_{end}", f"{prefix}{ytid}"]
    return stems


def audioset(root: Path, cfg: ImportConfig, ontology_path: str | Path | None = None, seed: int = 0) -> LayoutReader:
    csvs = sorted(p for p in root.glob("*segments*.csv") if p.is_file())
    if not csvs:
        raise LayoutError(f"{root}/*segments*.csv: not found (audioset layout expects segment CSVs such as "
                          "balanced_train_segments.csv in ROOT and the audio in ROOT/audio/ or ROOT/)")
    ontology = load_ontology(root, ontology_path)
    audio_root = root / "audio" if (root / "audio").is_dir() else root
    index = _index_audio(audio_root)
    has_eval = any("eval" in p.name for p in csvs)
    result = LayoutReader("audioset", "audioset", root, sum(_count_data_lines(p) + 1 for p in csvs), iter(()), ontology=ontology)
    result.notes.append(f"audio looked up by file stem under {audio_root}")
    from pipelines.corpus.importers import hash_split

    def rows() -> Iterator[Candidate]:
        for csv_path in csvs:
            is_eval = "eval" in csv_path.name
            with open(csv_path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                for line_no, fields in enumerate(csv.reader(fh, skipinitialspace=True), start=1):
                    if not fields or fields[0].lstrip().startswith("#"):
                        continue
                    if len(fields) < 4:
                        yield Candidate(f"audioset:{csv_path.name}:{line_no}", csv_path, [], [], problem=("bad_metadata", f"{csv_path}:{line_no}: expected YTID, start, end, labels"))
                        continue
                    ytid, start, end, mids_text = (f.strip() for f in fields[:4])
                    clip_id = f"audioset:{ytid}_{start}"
                    path = next((index[s] for s in _audioset_stems(ytid, start, end) if s in index), audio_root / f"{ytid}_{start}.wav")
                    mids = [m.strip() for m in mids_text.split(",") if m.strip()]
                    unknown = [m for m in mids if ontology.name(m) is None]
                    if unknown:
                        yield Candidate(clip_id, path, [], [], problem=("unknown_label", f"{csv_path}:{line_no}: label id(s) {unknown} not in {ontology.source}"))
                        continue
                    kept = ontology.remove_ancestors(mids)
                    result.parents_removed += len(dict.fromkeys(mids)) - len(kept)
                    if is_eval:
                        split = "test"
                    elif has_eval:
                        split = hash_split(f"audioset:{clip_id}", seed, cfg.val_fraction / max(1e-9, 1 - cfg.test_fraction), 0.0)
                    else:
                        split = None
                    yield Candidate(clip_id, path, [ontology.name(m) or m for m in kept], kept, split)

    result._iter = rows()
    return result


# ---------------------------------------------------------------------------------------------------------------


def folders(root: Path, cfg: ImportConfig) -> LayoutReader:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if not subdirs:
        raise LayoutError(f"{root}/<class>/: no class folder found (folders layout expects ROOT/<class>/<audio files> "
                          "or ROOT/<train|val|test>/<class>/<audio files>)")
    split_layout = all(p.name in ("train", "val", "test") for p in subdirs)
    groups: list[tuple[str | None, Path]] = []
    if split_layout:
        for split_dir in subdirs:
            groups += [(split_dir.name, c) for c in sorted(split_dir.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    else:
        groups = [(None, c) for c in subdirs]
    files: list[tuple[str | None, str, Path]] = []
    ignored = 0
    for split, class_dir in groups:
        for dirpath, dirs, names in os.walk(class_dir):
            dirs.sort()
            for name in sorted(names):
                if name.startswith("."):
                    continue
                if Path(name).suffix.lower() in AUDIO_EXTS:
                    files.append((split, class_dir.name, Path(dirpath) / name))
                else:
                    ignored += 1
    result = LayoutReader("folders", root.name or "folders", root, len(files), iter(()))
    if ignored:
        result.notes.append(f"{ignored} non-audio file(s) ignored")

    def rows() -> Iterator[Candidate]:
        for split, label, path in files:
            rel = path.relative_to(root).as_posix()
            yield Candidate(f"{result.dataset}:{rel}", path, [label], [label], split)

    result._iter = rows()
    return result


def open_layout(layout: str, root: str | Path, cfg: ImportConfig, ontology: str | Path | None = None,
                seed: int = 0) -> "LayoutReader | StemsReader":
    """Check `root` against `layout` and return its streamed reader (`stems`: a StemsReader of mixture folders,
    imported with `pipelines.corpus.stems.import_stems`)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: dataset root is not a directory")
    if layout == "esc50":
        return esc50(root, cfg)
    if layout == "fsd50k":
        return fsd50k(root, cfg, ontology)
    if layout == "audioset":
        return audioset(root, cfg, ontology, seed)
    if layout == "folders":
        return folders(root, cfg)
    if layout == "stems":
        from pipelines.corpus.stems import stems_layout

        return stems_layout(root, cfg)
    raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
