"""The embedded demo corpus: a labelled corpus generated from code alone.

Layout (see docs/ARCHITECTURE.md): clean single-label clips under `sources/<split>/`, natural-style scenes of
2-4 reverberant events plus ambience under `scenes/<split>/`, and the scenes' ground-truth stems under
`audit/<scene_id>/` (training never reads them; they measure how good pseudo-labels really are).

Determinism: every clip draws from its own generator seeded by (seed, kind, class key, split, index), so the
same seed gives byte-identical files whatever the number of workers or the generation order, and any single clip
can be regenerated alone.

Execution: a clip or a scene is one `DemoUnit`, rendered and written by the pure `render_unit(ctx, unit)`.
`generate_demo` plans the units, skips those already journalled and hands the rest to a `UnitRunner`; the
default renders them in this process, one after another. The engine passes a runner that fans them out as Ray
tasks (`engine/data_steps.py`): no process pool here, and no Ray in `pipelines/`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import signal

from pipelines.corpus.classes import SoundClass, bandpass, get_classes, pink_noise, render_instance, smooth_env, active_rms
from pipelines.corpus.config import SPLIT_NAMES, DemoConfig
from storage.atomic import atomic_path, atomic_write_text
from storage.audio import encode_audio
from storage import manifests as mf

log = logging.getLogger("stemforge.corpus.demo")

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_KIND_SOURCE = 1
_KIND_SCENE = 2
_KIND_EVENT = 3
EVENT_REFERENCE_DB = -23.0  # active RMS (dBFS) that per-event gains and ambience levels are relative to
BACKGROUND_LABEL = "background"
DEMO_DATASET = "demo"
DEMO_SUBDIRS = ("sources", "scenes", "audit", "manifests")
STATE_FILE = ".demo-state.json"  # fingerprint of the corpus being generated in this directory
PROGRESS_FILE = ".demo-progress.jsonl"  # one line per finished clip/scene: what a resumed run can skip
DEMO_FORMAT_VERSION = 1  # bump whenever synthesis code changes the bytes, so old partial runs are not resumed


class DemoCorpusError(RuntimeError):
    """The output directory or configuration cannot hold a demo corpus."""


@dataclass
class SceneAudio:
    """A rendered scene before encoding: `mixture` is exactly the float32 sum of `stems` (row order = `stem_labels`)."""

    scene_id: str
    split: str
    mixture: np.ndarray  # float32 [T]
    stems: np.ndarray  # float32 [K, T], reverberant events then background
    stem_labels: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)  # label, onset_s, offset_s (dry event extent)
    rt60_s: float = 0.0

    @property
    def event_labels(self) -> list[str]:
        return [e["label"] for e in self.events]


def source_rng(seed: int, cls: SoundClass, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_SOURCE, cls.key, SPLIT_CODES[split], index])


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_SCENE, SPLIT_CODES[split], index])


def event_rng(seed: int, split: str, index: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_EVENT, SPLIT_CODES[split], index, k])


def source_id(cls: SoundClass, split: str, index: int) -> str:
    return f"demo-{cls.slug}-{split}-{index:04d}"


def scene_id(split: str, index: int) -> str:
    return f"demo-scene-{split}-{index:04d}"


def render_source(cfg: DemoConfig, seed: int, cls: SoundClass, split: str, index: int, sr: int) -> np.ndarray:
    """One clean clip of `cls` (float32 [source_seconds * sr])."""
    rng = source_rng(seed, cls, split, index)
    level = rng.uniform(*cfg.source_level_db)
    return render_instance(cls, rng, int(round(cfg.source_seconds * sr)), sr, level)


def room_impulse_response(rng: np.random.Generator, rt60: float, drr_db: float, sr: int) -> np.ndarray:
    """Exponentially decaying noise tail (60 dB down after `rt60` s) behind a unit direct path.

    The tail is low-passed (air and wall absorption) and scaled to the requested direct-to-reverberant ratio.
    """
    length = max(int(min(1.2 * rt60, 1.0) * sr), 16)
    t = np.arange(length) / sr
    tail = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)
    pole = np.exp(-2 * np.pi * rng.uniform(2500, 6000) / sr)  # one-pole low-pass
    tail = signal.lfilter([1 - pole], [1, -pole], tail)
    predelay = int(rng.uniform(0.002, 0.015) * sr)
    tail[:predelay] = 0.0
    energy = float(np.sum(tail**2))
    if energy > 0:
        tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / energy)
    tail[0] = 1.0
    return tail


def render_ambience(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Diffuse background: coloured noise with a slowly wandering level and occasionally a mains-like hum."""
    noise = pink_noise(rng, n, rng.uniform(1.0, 2.0))
    noise = bandpass(noise, rng.uniform(40, 150), rng.uniform(1500, 6000), sr)
    t = np.arange(n) / sr
    noise *= 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:
        hum_f = float(rng.choice([50.0, 60.0]))
        noise += 0.3 * np.std(noise) * np.sin(2 * np.pi * hum_f * t)
    return noise * smooth_env(n, sr, 0.05, 0.05)


def render_scene(cfg: DemoConfig, seed: int, split: str, index: int, sr: int, classes: Sequence[SoundClass]) -> SceneAudio:
    """Render scene `index` of `split`: 2-4 events of different classes (fresh instances, not pool clips),
    each through its own impulse response of one room, plus ambience; stems are scaled together so that the
    mixture (their float32 sum) peaks at `scene_peak`."""
    rng = scene_rng(seed, split, index)
    n = int(round(cfg.scene_seconds * sr))
    lo, hi = cfg.events_per_scene
    k_events = int(rng.integers(lo, hi + 1))
    if k_events > len(classes):
        raise DemoCorpusError(f"a scene needs {k_events} different classes but only {len(classes)} are configured")
    picks = rng.choice(len(classes), size=k_events, replace=False)
    rt60 = float(rng.uniform(*cfg.rt60_s))
    stems: list[np.ndarray] = []
    events: list[dict[str, Any]] = []
    for k, ci in enumerate(picks):
        cls = classes[int(ci)]
        erng = event_rng(seed, split, index, k)
        dur = float(erng.uniform(*cfg.event_seconds))
        n_ev = int(round(dur * sr))
        onset = int(erng.integers(0, n - n_ev + 1))
        level = EVENT_REFERENCE_DB + float(erng.uniform(*cfg.event_gain_db))
        dry = render_instance(cls, erng, n_ev, sr, level).astype(np.float64)
        rir = room_impulse_response(erng, rt60, float(erng.uniform(*cfg.drr_db)), sr)
        wet = signal.fftconvolve(dry, rir)[: n - onset]
        stem = np.zeros(n)
        stem[onset:onset + wet.shape[0]] = wet
        stems.append(stem)
        events.append({"label": cls.name, "onset_s": onset / sr, "offset_s": (onset + n_ev) / sr})
    amb = render_ambience(rng, n, sr)
    amb_level = active_rms(amb, sr)
    amb *= 10.0 ** ((EVENT_REFERENCE_DB + float(rng.uniform(*cfg.ambience_db))) / 20.0) / max(amb_level, 1e-12)
    stems.append(amb)
    order = np.argsort([e["onset_s"] for e in events], kind="stable")
    events = [events[i] for i in order]
    stack = np.stack([stems[i] for i in order] + [stems[-1]])
    raw_peak = float(np.abs(stack.sum(axis=0)).max())
    gain = cfg.scene_peak / max(raw_peak, 1e-12)
    stem_peak = float(np.abs(stack).max()) * gain
    if stem_peak > 0.99:  # a stem louder than the mixture (cancellation) must still encode without clipping
        gain *= 0.99 / stem_peak
    stems32 = (stack * gain).astype(np.float32)
    mixture = stems32.sum(axis=0, dtype=np.float32)
    return SceneAudio(
        scene_id=scene_id(split, index),
        split=split,
        mixture=mixture,
        stems=stems32,
        stem_labels=[e["label"] for e in events] + [BACKGROUND_LABEL],
        events=events,
        rt60_s=rt60,
    )


def scene_caption(labels: Sequence[str]) -> str:
    """Caption from the catalogue phrases, e.g. 'a dog barking, rain falling and a siren wailing'."""
    from pipelines.corpus.classes import BY_NAME

    phrases = [BY_NAME[label].phrase if label in BY_NAME else label for label in labels]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


# ---------------------------------------------------------------------------------------------------------------
# writing


def _write_flac(path: Path, audio: np.ndarray, sr: int) -> str:
    """Atomically write 24-bit FLAC and return the sha256 of the exact bytes written."""
    data = encode_audio(audio, sr, "FLAC")
    with atomic_path(path) as tmp:  # one fsync of the file and one of its directory (atomic_write_bytes does 3)
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _scene_domain(labels: Sequence[str]) -> str:
    from pipelines.corpus.classes import BY_NAME

    domains = {BY_NAME[label].domain for label in labels if label in BY_NAME}
    return domains.pop() if len(domains) == 1 else "sound"


@dataclass(frozen=True)
class DemoUnit:
    """One clip (`kind="source"`, of `class_name`) or one scene of the demo corpus: the unit of work and resume."""

    kind: str  # "source" | "scene"
    split: str
    index: int
    class_name: str = ""


@dataclass(frozen=True)
class DemoContext:
    """Everything `render_unit` needs besides the unit (small and picklable: shipped once to every worker)."""

    out: str  # resolved corpus directory
    cfg: DemoConfig
    seed: int
    sample_rate: int
    class_names: tuple[str, ...]


# `runner(units, ctx, on_result)` must call `on_result(i, render_unit(ctx, units[i]))` once per unit, in any order.
UnitRunner = Callable[[list[DemoUnit], DemoContext, Callable[[int, dict[str, Any]], None]], None]


def render_unit(ctx: DemoContext, unit: DemoUnit) -> dict[str, Any]:
    """Render and atomically write one clip or scene (+ its audit stems); returns its manifest rows.

    Pure apart from its own output files (deterministic names and bytes), so running it twice is harmless."""
    out, cfg, seed, sr = Path(ctx.out), ctx.cfg, ctx.seed, ctx.sample_rate
    classes = get_classes(list(ctx.class_names))
    if unit.kind == "source":
        from pipelines.corpus.classes import BY_NAME

        cls = BY_NAME[unit.class_name]
        audio = render_source(cfg, seed, cls, unit.split, unit.index, sr)
        cid = source_id(cls, unit.split, unit.index)
        path = (out / "sources" / unit.split / f"{cid}.flac").resolve()
        digest = _write_flac(path, audio, sr)
        row = {
            "clip_id": cid, "path": str(path), "sample_rate": sr, "num_frames": int(audio.shape[0]),
            "duration_s": audio.shape[0] / sr, "labels": [cls.name], "label_ids": [cls.name], "domain": cls.domain,
            "split": unit.split, "content_hash": digest, "dataset": DEMO_DATASET,
        }
        return {"source": row}
    scene = render_scene(cfg, seed, unit.split, unit.index, sr, classes)
    audit_dir = (out / "audit" / scene.scene_id).resolve()
    audit_rows = []
    for k, (label, stem) in enumerate(zip(scene.stem_labels, scene.stems)):
        stem_path = audit_dir / f"{k}_{label.replace(' ', '_')}.flac"
        _write_flac(stem_path, stem, sr)
        audit_rows.append({"scene_id": scene.scene_id, "label": label, "path": str(stem_path), "source_clip_id": None})
    path = (out / "scenes" / unit.split / f"{scene.scene_id}.flac").resolve()
    digest = _write_flac(path, scene.mixture, sr)
    labels = scene.event_labels
    row = {
        "clip_id": scene.scene_id, "path": str(path), "sample_rate": sr, "num_frames": int(scene.mixture.shape[0]),
        "duration_s": scene.mixture.shape[0] / sr, "labels": labels, "label_ids": labels,
        "domain": _scene_domain(labels), "split": unit.split, "content_hash": digest, "dataset": DEMO_DATASET,
        "event_labels": labels, "events": scene.events, "caption": scene_caption(labels), "audit_dir": str(audit_dir),
    }
    return {"scene": row, "audit": audit_rows}


def render_units_inline(units: list[DemoUnit], ctx: DemoContext, on_result: Callable[[int, dict[str, Any]], None]) -> None:
    """The default `UnitRunner`: every unit in this process, in order."""
    for i, unit in enumerate(units):
        on_result(i, render_unit(ctx, unit))


def _jobs(cfg: DemoConfig, classes: Sequence[SoundClass]) -> list[DemoUnit]:
    jobs: list[DemoUnit] = []
    for split in SPLIT_NAMES:
        for cls in classes:
            jobs.extend(DemoUnit("source", split, i, cls.name) for i in range(cfg.sources_per_class.get(split, 0)))
    for split in SPLIT_NAMES:
        jobs.extend(DemoUnit("scene", split, i) for i in range(cfg.scenes.get(split, 0)))
    return jobs


def fingerprint(cfg: DemoConfig, seed: int, sample_rate: int) -> str:
    """Identity of the corpus content: everything that changes a byte (not the worker count)."""
    payload = {"cfg": cfg.model_dump(mode="json", exclude={"workers"}), "seed": seed, "sample_rate": sample_rate,
               "format": DEMO_FORMAT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _job_key(job: DemoUnit) -> str:
    return f"{job.kind}/{job.split}/{job.class_name}/{job.index}"


def _result_paths(result: dict[str, Any]) -> list[str]:
    if "source" in result:
        return [result["source"]["path"]]
    return [result["scene"]["path"]] + [a["path"] for a in result["audit"]]


def _load_progress(out: Path) -> dict[str, dict[str, Any]]:
    """Finished jobs of an interrupted run whose files are all still there (a torn last line is ignored)."""
    done: dict[str, dict[str, Any]] = {}
    path = out / PROGRESS_FILE
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if all(Path(p).is_file() for p in _result_paths(record["result"])):
                done[record["key"]] = record["result"]
    return done


def _prepare_out(out: Path, fp: str) -> dict[str, dict[str, Any]]:
    """Make `out` ready and return the jobs already finished there.

    Same fingerprint (an interrupted or repeated run): keep what is done and resume. Another fingerprint: clear
    the previous demo corpus so no stale clip of a larger earlier run survives. Refuse directories that hold
    anything else, including a demo corpus that real datasets were imported into.
    """
    if out.exists() and not out.is_dir():
        raise DemoCorpusError(f"{out}: exists and is not a directory")
    done: dict[str, dict[str, Any]] = {}
    if out.is_dir() and any(out.iterdir()):
        state_path = out / STATE_FILE
        if not (out / "corpus.json").is_file() and not state_path.is_file():
            raise DemoCorpusError(f"{out}: directory is not empty and holds no demo corpus (corpus.json); refusing to write into it")
        if (out / "import_report.json").is_file():
            raise DemoCorpusError(f"{out}: datasets were imported into this corpus (import_report.json); regenerating would drop their manifests, refusing")
        try:
            previous = json.loads(state_path.read_text()).get("fingerprint") if state_path.is_file() else None
        except (json.JSONDecodeError, OSError):
            previous = None
        if previous == fp:
            done = _load_progress(out)
        else:
            for sub in DEMO_SUBDIRS:
                if (out / sub).is_dir():
                    shutil.rmtree(out / sub)
            for name in ("corpus.json", PROGRESS_FILE):
                (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / STATE_FILE, json.dumps({"fingerprint": fp}) + "\n")
    return done


def generate_demo(out_dir: str | Path, cfg: DemoConfig, seed: int, sample_rate: int = 16000,
                  progress: Callable[[int], None] | None = None, extra_summary: dict[str, Any] | None = None,
                  runner: UnitRunner = render_units_inline) -> dict[str, Any]:
    """Generate the demo corpus into `out_dir`; returns the summary also written to `corpus.json`.

    Resumable: every finished clip or scene is journalled (in the calling process, as results arrive), so a run
    that was interrupted (or repeated with the same config and seed) only renders what is missing; the result is
    byte-identical to an uninterrupted run whatever `runner` rendered the units. `progress(n)` advances by the
    number of finished clips/scenes (total = `count_jobs(cfg)`).
    """
    if seed < 0:
        raise DemoCorpusError(f"seed must be >= 0, got {seed}")
    classes = get_classes(cfg.classes)
    if len(classes) < cfg.events_per_scene[1]:
        raise DemoCorpusError(f"events_per_scene up to {cfg.events_per_scene[1]} needs at least that many classes, got {len(classes)}")
    out = Path(out_dir).resolve()
    done = _prepare_out(out, fingerprint(cfg, seed, sample_rate))
    jobs = _jobs(cfg, classes)
    ctx = DemoContext(str(out), cfg, seed, sample_rate, tuple(c.name for c in classes))
    pending = [job for job in jobs if _job_key(job) not in done]
    if done:
        log.info("resuming demo corpus in %s: %d of %d clips/scenes already done", out, len(jobs) - len(pending), len(jobs))
        if progress is not None:
            progress(len(jobs) - len(pending))
    with open(out / PROGRESS_FILE, "a", encoding="utf-8") as journal:
        def finished(i: int, result: dict[str, Any]) -> None:
            key = _job_key(pending[i])
            done[key] = result
            journal.write(json.dumps({"key": key, "result": result}) + "\n")
            journal.flush()
            if progress is not None:
                progress(1)

        runner(pending, ctx, finished)
    missing = [_job_key(job) for job in pending if _job_key(job) not in done]
    if missing:
        raise DemoCorpusError(f"{out}: the unit runner returned no result for {len(missing)} unit(s), e.g. {missing[0]}")
    source_rows: list[dict[str, Any]] = []
    scene_rows: list[dict[str, Any]] = []
    audit_rows: list[dict[str, Any]] = []
    for job in jobs:
        result = done[_job_key(job)]
        if "source" in result:
            source_rows.append(result["source"])
        else:
            scene_rows.append(result["scene"])
            audit_rows.extend(result["audit"])
    man = out / "manifests"
    mf.write_manifest(man / "sources", mf.SOURCE_CLIP_SCHEMA, source_rows)
    mf.write_manifest(man / "scenes", mf.NATURAL_SCENE_SCHEMA, scene_rows)
    mf.write_manifest(man / "audit", mf.AUDIT_STEM_SCHEMA, audit_rows)
    mf.write_manifest(man / "quarantine", mf.QUARANTINE_SCHEMA, [])
    summary = summarise(classes, source_rows, scene_rows, audit_rows, seed, sample_rate)
    if extra_summary:
        summary.update(extra_summary)
    atomic_write_text(out / "corpus.json", json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return summary


def count_jobs(cfg: DemoConfig) -> int:
    classes = get_classes(cfg.classes)
    return len(_jobs(cfg, classes))


def summarise(classes: Sequence[SoundClass], source_rows: list[dict], scene_rows: list[dict], audit_rows: list[dict],
              seed: int, sample_rate: int) -> dict[str, Any]:
    """Counts and hours per pool, split and class (deterministic: no timestamps)."""
    def hours(rows: list[dict]) -> float:
        return round(sum(r["duration_s"] for r in rows) / 3600.0, 6)

    per_class_sources = {c.name: hours([r for r in source_rows if r["labels"] == [c.name]]) for c in classes}
    per_class_scenes = {c.name: sum(1 for r in scene_rows if c.name in r["event_labels"]) for c in classes}
    return {
        "dataset": DEMO_DATASET,
        "seed": seed,
        "sample_rate": sample_rate,
        "classes": [{"name": c.name, "domain": c.domain, "phrase": c.phrase} for c in classes],
        "counts": {
            "sources": {s: sum(1 for r in source_rows if r["split"] == s) for s in SPLIT_NAMES},
            "scenes": {s: sum(1 for r in scene_rows if r["split"] == s) for s in SPLIT_NAMES},
            "audit_stems": len(audit_rows),
        },
        "hours": {"sources": hours(source_rows), "scenes": hours(scene_rows)},
        "hours_per_class": {"sources": per_class_sources},
        "scenes_per_class": per_class_scenes,
        "layout": {
            "sources": "sources/<split>/<clip_id>.flac",
            "scenes": "scenes/<split>/<scene_id>.flac",
            "audit": "audit/<scene_id>/<k>_<label>.flac (training never reads these)",
            "manifests": ["manifests/sources", "manifests/scenes", "manifests/audit", "manifests/quarantine"],
        },
    }
