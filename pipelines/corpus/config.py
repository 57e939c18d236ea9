"""Config section `corpus`: the embedded demo corpus and dataset import.

The defaults are the embedded demo: 16 synthesised classes, 40 clean 4-s clips per class and 110 natural-style
8-s scenes, small enough to generate in well under a minute on 2 cores.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from storage.configio import Section

SPLIT_NAMES = ("train", "val", "test")
MIN_CLIP_SECONDS = 0.75  # every synthesiser is guaranteed to sound at least once in this long (tested)


def _check_range(value: tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = value
    if lo > hi:
        raise ValueError(f"{name}: lower bound {lo} is above upper bound {hi}")
    return value


def _check_splits(value: dict[str, int]) -> dict[str, int]:
    unknown = sorted(set(value) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; allowed: {list(SPLIT_NAMES)}")
    if any(v < 0 for v in value.values()):
        raise ValueError("counts must be >= 0")
    return value


class DemoConfig(Section):
    """Sizes and acoustics of the embedded demo corpus."""

    classes: list[str] = Field(default_factory=list, description="class names from the catalogue; empty = all")
    source_seconds: float = Field(4.0, ge=MIN_CLIP_SECONDS)
    scene_seconds: float = Field(8.0, ge=MIN_CLIP_SECONDS)
    sources_per_class: dict[str, int] = Field(default_factory=lambda: {"train": 30, "val": 5, "test": 5})
    scenes: dict[str, int] = Field(default_factory=lambda: {"train": 320, "val": 30, "test": 60})
    events_per_scene: tuple[int, int] = (2, 4)
    event_seconds: tuple[float, float] = (1.5, 4.0)
    source_level_db: tuple[float, float] = (-28.0, -18.0)  # active RMS of clean clips (dBFS)
    event_gain_db: tuple[float, float] = (-6.0, 6.0)  # per-event gain in a scene, relative to -23 dBFS
    rt60_s: tuple[float, float] = (0.15, 0.7)  # room reverberation time, one room per scene
    drr_db: tuple[float, float] = (0.0, 12.0)  # direct-to-reverberant ratio per event
    ambience_db: tuple[float, float] = (-30.0, -15.0)  # background RMS relative to the event reference level
    scene_peak: float = Field(0.9, gt=0.0, lt=1.0)  # peak of the scene after normalising all stems together
    workers: int = Field(2, ge=0, description="demo units rendered at once as Ray tasks (engine.backend: ray); 0 = as many as Ray has CPUs; not part of the content")

    @field_validator("sources_per_class", "scenes")
    @classmethod
    def _splits(cls, value: dict[str, int]) -> dict[str, int]:
        return _check_splits(value)

    @field_validator("events_per_scene")
    @classmethod
    def _events(cls, value: tuple[int, int]) -> tuple[int, int]:
        _check_range(value, "events_per_scene")
        if value[0] < 1:
            raise ValueError("a scene needs at least one event")
        return value

    @field_validator("event_seconds", "source_level_db", "event_gain_db", "rt60_s", "drr_db", "ambience_db")
    @classmethod
    def _ranges(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, "range")

    @model_validator(mode="after")
    def _fits(self) -> "DemoConfig":
        if self.event_seconds[0] < MIN_CLIP_SECONDS:
            raise ValueError(f"event_seconds lower bound {self.event_seconds[0]} is below {MIN_CLIP_SECONDS} s")
        if self.event_seconds[1] > self.scene_seconds:
            raise ValueError(f"event_seconds upper bound {self.event_seconds[1]} exceeds scene_seconds {self.scene_seconds}")
        return self


class ImportConfig(Section):
    """How real datasets are turned into manifests."""

    val_fraction: float = Field(0.1, ge=0.0, le=1.0)  # hash split when the dataset has no split of its own
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)
    esc50_val_folds: list[int] = Field(default_factory=lambda: [4])
    esc50_test_folds: list[int] = Field(default_factory=lambda: [5])
    label_domains: dict[str, str] = Field(default_factory=dict, description="exact label -> speech|music|sound")
    batch_rows: int = Field(1000, ge=1, description="rows per manifest part written during import")
    stems_split: Literal["train", "val", "test", "hash"] = Field(
        "test", description="split of `stems` mixtures without train/val/test folders; hash = seeded hash split")
    stems_sum_min_db: float = Field(
        30.0, description="`stems` layout: residual SDR (mixture vs sum of stems) from which a mixture is 'sum', below 'not_sum'")
    max_seconds: float | None = Field(
        900.0, gt=0.0, description="clips longer than this are quarantined too_long from their header (every later "
                                   "stage decodes a clip whole); null = no limit (the import itself streams any length)")
    allow_outside_root: bool = Field(
        False, description="import files that resolve outside the dataset root (symlinks, '..' in metadata rows)")

    @field_validator("label_domains")
    @classmethod
    def _domains(cls, value: dict[str, str]) -> dict[str, str]:
        bad = {k: v for k, v in value.items() if v not in ("speech", "music", "sound")}
        if bad:
            raise ValueError(f"domains must be speech|music|sound, got {bad}")
        return value

    @model_validator(mode="after")
    def _fractions(self) -> "ImportConfig":
        if self.val_fraction + self.test_fraction > 1.0:
            raise ValueError("val_fraction + test_fraction must be <= 1")
        return self


CORPUS_KINDS = ("demo", "manifests")
IMPORT_LAYOUTS = ("esc50", "fsd50k", "audioset", "folders", "stems")


class CorpusSource(Section):
    """Where a user corpus comes from: a folder written by `stemforge corpus import` (`path`), or a dataset root the
    run imports itself (`root` + `layout`, into the run directory; incremental and deduplicated like the command)."""

    path: str | None = Field(None, description="a `stemforge corpus import --out` folder (holds manifests/)")
    root: str | None = Field(None, description="dataset root the run imports (with `layout`)")
    layout: str | None = Field(None, description=f"import layout of `root`: {' | '.join(IMPORT_LAYOUTS)}")
    ontology: str | None = Field(None, description="AudioSet ontology.json for `root` (default: the shipped one)")
    limit: int | None = Field(None, ge=1, description="import at most this many clips (trial runs)")

    @model_validator(mode="after")
    def _one_source(self) -> "CorpusSource":
        if (self.path is None) == (self.root is None):
            raise ValueError("give exactly one of `path` (an imported corpus folder) or `root` + `layout` (import it)")
        if self.root is not None and self.layout not in IMPORT_LAYOUTS:
            raise ValueError(f"`root` needs `layout` in {list(IMPORT_LAYOUTS)}, got {self.layout!r}")
        if self.path is not None and (self.layout is not None or self.ontology is not None or self.limit is not None):
            raise ValueError("`layout`, `ontology` and `limit` apply to `root` (an import), not to `path`")
        return self


class CorpusConfig(Section):
    """The corpus a run works on: the embedded demo (`kind: demo`) or the user's imported data (`kind: manifests`).

    `kind: manifests`: `data` holds the clean sources (synthetic mixtures, scorer training) and the natural scenes
    (pseudo-labelled); `eval` is the natural evaluation set with ground-truth stems (a `stems` import: its `val`
    scenes feed the stop rule, the rest report). Without `eval`, the data corpus's own scenes with stems are used,
    and where no stems exist at all the run evaluates label-free (Re-SDR, CLAP, judge on held-out scenes)."""

    kind: str = Field("demo", description=f"{' | '.join(CORPUS_KINDS)}")
    data: CorpusSource | None = Field(None, description="kind manifests: the user's corpus")
    eval: CorpusSource | None = Field(None, description="natural evaluation set with stems (optional)")
    demo: DemoConfig = Field(default_factory=DemoConfig)
    importer: ImportConfig = Field(default_factory=ImportConfig)

    @model_validator(mode="after")
    def _kind(self) -> "CorpusConfig":
        if self.kind not in CORPUS_KINDS:
            raise ValueError(f"corpus.kind must be one of {list(CORPUS_KINDS)}, got {self.kind!r}")
        if self.kind == "manifests" and self.data is None:
            raise ValueError("corpus.kind: manifests needs corpus.data (path: an imported folder, or root + layout)")
        if self.kind == "demo" and self.data is not None:
            raise ValueError("corpus.data is only read with corpus.kind: manifests")
        return self
