"""The embedded demo corpus: catalogue coverage, instance variety, exact stem sums, layout, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.corpus.classes import CATALOGUE, active_rms, get_classes, render_instance
from pipelines.corpus.config import DemoConfig
from pipelines.corpus.demo import (
    BACKGROUND_LABEL,
    PROGRESS_FILE,
    DemoCorpusError,
    count_jobs,
    generate_demo,
    render_scene,
    render_source,
    room_impulse_response,
    scene_caption,
)
from storage import manifests as mf
from storage.audio import AudioConfig, load_audio

SR = 16000
FIVE = ["male speech", "piano", "drums", "dog", "siren"]


def tiny_cfg(**kw) -> DemoConfig:
    base = dict(classes=FIVE, source_seconds=1.0, scene_seconds=2.5, event_seconds=(0.8, 1.5),
                sources_per_class={"train": 2, "val": 1, "test": 1}, scenes={"train": 3, "val": 1, "test": 1},
                events_per_scene=(2, 4), workers=1)
    base.update(kw)
    return DemoConfig(**base)


def test_catalogue_spans_domains_with_unique_names() -> None:
    assert len(CATALOGUE) >= 12
    assert {c.domain for c in CATALOGUE} == {"speech", "music", "sound"}
    assert len({c.name for c in CATALOGUE}) == len(CATALOGUE)
    assert len({c.key for c in CATALOGUE}) == len(CATALOGUE)
    assert all(c.phrase and c.phrase != "" for c in CATALOGUE)
    with pytest.raises(ValueError, match="unicorn"):
        get_classes(["dog", "unicorn"])


@pytest.mark.parametrize("cls", CATALOGUE, ids=[c.slug for c in CATALOGUE])
def test_every_class_renders_varied_usable_instances(cls) -> None:
    n = 2 * SR
    a = render_instance(cls, np.random.default_rng(1), n, SR, -20.0)
    a2 = render_instance(cls, np.random.default_rng(1), n, SR, -20.0)
    b = render_instance(cls, np.random.default_rng(2), n, SR, -20.0)
    assert a.dtype == np.float32 and a.shape == (n,)
    assert np.isfinite(a).all() and np.abs(a).max() <= 0.95 + 1e-6
    np.testing.assert_array_equal(a, a2)  # same generator state, same instance
    assert not np.allclose(a, b)  # another draw is another instance
    level = 20 * np.log10(active_rms(a, SR))
    assert -20.0 - 12.0 < level <= -20.0 + 1e-3  # normalised (peak limiting may only lower it)
    # sources must sound for a fair part of the clip so a separator can learn them
    frames = a[: (n // 800) * 800].reshape(-1, 800)
    sounding = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) > 10 ** (-60 / 20)
    assert sounding.mean() > 0.2, f"{cls.name}: only {sounding.mean():.0%} of frames sound"


def test_every_class_sounds_in_the_shortest_allowed_clip() -> None:
    from pipelines.corpus.config import MIN_CLIP_SECONDS

    n = int(MIN_CLIP_SECONDS * SR)
    for cls in CATALOGUE:
        for i in range(12):
            x = render_instance(cls, np.random.default_rng([i, cls.key]), n, SR, -20.0)  # raises on silence
            assert np.isfinite(x).all() and np.abs(x).max() > 0.01
    with pytest.raises(ValueError, match="event_seconds"):
        tiny_cfg(event_seconds=(0.2, 1.0))


def test_classes_are_spectrally_distinct() -> None:
    """Spectral centroids must separate low (bass, engine), mid and high (bird, whistling) classes."""
    def centroid(name: str) -> float:
        x = render_instance(get_classes([name])[0], np.random.default_rng(0), 2 * SR, SR, -20.0).astype(np.float64)
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.shape[0], 1 / SR)
        return float((spec * freqs).sum() / spec.sum())

    assert centroid("bass guitar") < 600 and centroid("engine") < 800
    assert centroid("bird") > 2000 and centroid("whistling") > 700
    assert centroid("bass guitar") < centroid("male speech") < centroid("bird")


def test_room_impulse_response_decay_and_drr() -> None:
    rir = room_impulse_response(np.random.default_rng(0), rt60=0.5, drr_db=6.0, sr=SR)
    assert rir[0] == 1.0
    tail = rir[1:]
    assert abs(10 * np.log10(1.0 / np.sum(tail**2)) - 6.0) < 1e-6
    early = np.sum(tail[: SR // 10] ** 2)
    late = np.sum(tail[SR // 4: SR // 4 + SR // 10] ** 2)
    assert early > 10 * late  # exponentially decaying


def test_scene_is_exact_sum_of_audit_stems() -> None:
    cfg = tiny_cfg()
    classes = get_classes(FIVE)
    for index in range(6):
        scene = render_scene(cfg, 3, "train", index, SR, classes)
        assert scene.mixture.dtype == np.float32 and scene.stems.dtype == np.float32
        k = len(scene.events)
        assert 2 <= k <= 4 and scene.stems.shape == (k + 1, int(2.5 * SR))
        assert scene.stem_labels[-1] == BACKGROUND_LABEL and BACKGROUND_LABEL not in scene.event_labels
        assert len(set(scene.event_labels)) == k  # different classes
        total = scene.stems.astype(np.float64).sum(axis=0)
        assert np.max(np.abs(total - scene.mixture)) <= 4 * np.finfo(np.float32).eps * max(1.0, np.abs(total).max())
        assert abs(float(np.abs(scene.mixture).max()) - cfg.scene_peak) < 1e-4
        onsets = [e["onset_s"] for e in scene.events]
        assert onsets == sorted(onsets)
        for e, stem in zip(scene.events, scene.stems):
            assert 0.0 <= e["onset_s"] < e["offset_s"] <= 2.5 + 1e-9
            before = stem[: int(e["onset_s"] * SR)]
            assert np.all(before == 0)  # nothing before the event's onset
            assert np.abs(stem).max() > 0


def test_scene_events_are_fresh_instances_not_pool_clips() -> None:
    cfg = tiny_cfg(source_seconds=1.0, event_seconds=(1.0, 1.0), rt60_s=(0.15, 0.15), drr_db=(60.0, 60.0))
    classes = get_classes(FIVE)
    scene = render_scene(cfg, 0, "train", 0, SR, classes)
    pool = [render_source(cfg, 0, c, "train", i, SR) for c in classes for i in range(2)]
    for e, stem in zip(scene.events, scene.stems):
        on = int(round(e["onset_s"] * SR))
        seg = stem[on:on + SR].astype(np.float64)
        for clip in pool:
            c = clip.astype(np.float64)
            corr = abs(np.dot(seg, c)) / (np.linalg.norm(seg) * np.linalg.norm(c) + 1e-12)
            assert corr < 0.95


def test_caption_from_phrases() -> None:
    assert scene_caption(["dog", "rain"]) == "a dog barking and rain falling"
    assert scene_caption(["dog", "rain", "siren"]) == "a dog barking, rain falling and a siren wailing"


def read_all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.flac"))}


def test_generate_layout_manifests_and_audit(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    out = tmp_path / "demo"
    ticks: list[int] = []
    summary = generate_demo(out, cfg, seed=5, sample_rate=SR, progress=ticks.append)
    assert len(ticks) == count_jobs(cfg) == 5 * 4 + 5
    assert summary["counts"]["sources"] == {"train": 10, "val": 5, "test": 5}
    assert summary["counts"]["scenes"] == {"train": 3, "val": 1, "test": 1}
    assert json.loads((out / "corpus.json").read_text()) == summary

    sources = list(mf.iter_rows(out / "manifests" / "sources", expect="source_clip"))
    assert len(sources) == 20 and {r["split"] for r in sources} == {"train", "val", "test"}
    for r in sources:
        assert Path(r["path"]).is_absolute() and Path(r["path"]).parent == out.resolve() / "sources" / r["split"]
        assert r["content_hash"] == mf.file_hash(r["path"])
        assert len(r["labels"]) == 1 and r["labels"][0] in FIVE
        audio = load_audio(r["path"], AudioConfig(min_duration_s=0.5))
        assert audio.shape[0] == r["num_frames"] == SR

    scenes = list(mf.iter_rows(out / "manifests" / "scenes", expect="natural_scene"))
    audits = list(mf.iter_rows(out / "manifests" / "audit", expect="audit_stem"))
    assert len(scenes) == 5
    for s in scenes:
        assert s["audit_dir"] and "audit" in s["audit_dir"] and s["events"] and s["caption"]
        stems = [a for a in audits if a["scene_id"] == s["clip_id"]]
        assert [a["label"] for a in stems] == s["event_labels"] + [BACKGROUND_LABEL]
        mix, sr = sf.read(s["path"], dtype="float64")
        assert sr == SR
        total = sum(sf.read(a["path"], dtype="float64")[0] for a in stems)
        # each 24-bit stem and the mixture carry at most half an LSB (2^-24) of rounding
        assert np.max(np.abs(total - mix)) <= (len(stems) + 1) * 2.0**-24 + 1e-9
        assert all(Path(a["path"]).parent == Path(s["audit_dir"]) for a in stems)
    # training pools never point into the audit area
    assert not any("/audit/" in r["path"] for r in sources + scenes)
    assert list(mf.iter_rows(out / "manifests" / "quarantine", expect="quarantine")) == []


@pytest.mark.timeout(180)
def test_same_seed_same_bytes_with_ray_tasks_and_in_process(ray_local, tmp_path: Path) -> None:
    """The engine fans the units out as Ray tasks (2 in flight, several units per task); the files, manifests and
    summary equal the in-process run's."""
    from engine.data_steps import DEMO_UNITS_PER_TASK, build_demo_corpus

    cfg = tiny_cfg(sources_per_class={"train": 2, "val": 1, "test": 0}, scenes={"train": 2, "val": 0, "test": 1})
    assert count_jobs(cfg) > DEMO_UNITS_PER_TASK  # more than one task
    generate_demo(tmp_path / "a", cfg, seed=11, sample_rate=SR)  # the pipeline's own in-process runner
    ticks: list[int] = []
    build_demo_corpus(tmp_path / "b", cfg, 11, SR, executor="ray", workers=2, progress=ticks.append)
    build_demo_corpus(tmp_path / "i", cfg, 11, SR, executor="inprocess")
    generate_demo(tmp_path / "c", cfg, seed=12, sample_rate=SR)
    a, b, i, c = (read_all_bytes(tmp_path / x) for x in "abic")
    assert sum(ticks) == count_jobs(cfg)
    assert a and a == b == i
    assert (tmp_path / "a" / "corpus.json").read_bytes() == (tmp_path / "b" / "corpus.json").read_bytes()
    for pool in ("sources", "scenes", "audit"):
        assert manifest_rows(tmp_path / "b", pool) == manifest_rows(tmp_path / "a", pool)
    pools = [k for k in a if not k.startswith("audit/")]  # audit file names carry the (seed-dependent) labels
    assert pools and all(k in c and a[k] != c[k] for k in pools)


def test_splits_fixed_by_seed_independent_of_other_sizes() -> None:
    """Clip i of a class/split is the same whatever the sizes of other splits or the class list."""
    small = tiny_cfg()
    big = tiny_cfg(classes=FIVE + ["rain", "bird"], sources_per_class={"train": 9, "val": 4, "test": 4})
    cls = get_classes(["dog"])[0]
    np.testing.assert_array_equal(render_source(small, 1, cls, "val", 0, SR), render_source(big, 1, cls, "val", 0, SR))
    assert not np.array_equal(render_source(small, 1, cls, "val", 0, SR), render_source(small, 1, cls, "test", 0, SR))


def test_regeneration_replaces_previous_demo_and_refuses_foreign_dirs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    generate_demo(out, tiny_cfg(), seed=0, sample_rate=SR)
    generate_demo(out, tiny_cfg(sources_per_class={"train": 1}, scenes={"train": 1}), seed=0, sample_rate=SR)
    assert len(list((out / "sources").rglob("*.flac"))) == 5  # stale clips of the bigger run are gone
    assert len(list((out / "scenes").rglob("*.flac"))) == 1
    (out / "import_report.json").write_text("{}")  # real datasets were imported into it: keep their manifests
    with pytest.raises(DemoCorpusError, match="imported"):
        generate_demo(out, tiny_cfg(), seed=0, sample_rate=SR)
    assert (out / "manifests" / "sources").is_dir()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(DemoCorpusError, match="refusing"):
        generate_demo(foreign, tiny_cfg(), seed=0, sample_rate=SR)
    assert (foreign / "thesis.txt").read_text() == "precious"
    with pytest.raises(DemoCorpusError, match="seed"):
        generate_demo(tmp_path / "neg", tiny_cfg(), seed=-1, sample_rate=SR)
    with pytest.raises(DemoCorpusError, match="classes"):
        generate_demo(tmp_path / "few", tiny_cfg(classes=["dog", "rain"]), seed=0, sample_rate=SR)


class Interrupt(Exception):
    pass


def manifest_rows(out: Path, pool: str) -> list[dict]:
    """Manifest rows with the corpus root taken out of the paths (to compare corpora in different places)."""
    rows = list(mf.iter_rows(out / "manifests" / pool))
    return [json.loads(json.dumps(r, default=str).replace(str(out.resolve()), "<root>")) for r in rows]


def test_interrupted_run_resumes_to_identical_corpus(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    generate_demo(tmp_path / "ref", cfg, seed=2, sample_rate=SR)
    run_dir = tmp_path / "run"
    calls: list[int] = []

    def stop_after_seven(n: int) -> None:
        calls.append(n)
        if len(calls) == 7:
            raise Interrupt()

    with pytest.raises(Interrupt):
        generate_demo(run_dir, cfg, seed=2, sample_rate=SR, progress=stop_after_seven)
    assert not (run_dir / "corpus.json").exists()
    with open(run_dir / PROGRESS_FILE, "a") as fh:
        fh.write('{"key": "source/tr')  # a torn last line, as after a crash mid-write
    ticks: list[int] = []
    generate_demo(run_dir, cfg, seed=2, sample_rate=SR, progress=ticks.append)
    assert ticks[0] == 7 and sum(ticks) == count_jobs(cfg)
    assert read_all_bytes(run_dir) == read_all_bytes(tmp_path / "ref")
    for pool in ("sources", "scenes", "audit"):
        assert manifest_rows(run_dir, pool) == manifest_rows(tmp_path / "ref", pool)


def test_repeated_run_renders_nothing_and_redoes_deleted_files(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    out = tmp_path / "demo"
    generate_demo(out, cfg, seed=0, sample_rate=SR)
    files = sorted(out.rglob("*.flac"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    victim = files[3]
    original = victim.read_bytes()
    victim.unlink()
    generate_demo(out, cfg.model_copy(update={"workers": 2}), seed=0, sample_rate=SR)  # worker count is not content
    assert victim.read_bytes() == original
    unchanged = [p for p in files if p != victim and p.stat().st_mtime_ns == stamps[p]]
    assert len(unchanged) >= len(files) - 6  # only the job owning the deleted file (a scene has up to 6 files) reran


def _band_profile(x: np.ndarray) -> np.ndarray:
    """Mean log energy in 32 log-spaced bands over the sounding frames, plus activity and burstiness."""
    n, hop = 512, 256
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n)[::hop] * np.hanning(n)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.geomspace(2, 257, 33).astype(int)
    bands = 10 * np.log10(np.stack([spec[:, a:b].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1) + 1e-10)
    energy = 10 * np.log10(spec.sum(1) + 1e-10)
    active = energy > energy.max() - 30
    profile = bands[active].mean(0)
    return np.concatenate([profile - profile.max(), [active.mean() * 20, np.std(np.diff(energy)) / 2]])


def test_classes_are_learnable_yet_varied() -> None:
    """A crude nearest-centroid classifier on band profiles (leave-one-out over fresh instances) must mostly
    recognise the class: distinguishable classes. Instances of one class must still differ from each other."""
    feats, labels = [], []
    for ci, cls in enumerate(CATALOGUE):
        for i in range(4):
            feats.append(_band_profile(render_instance(cls, np.random.default_rng([9, cls.key, i]), 2 * SR, SR, -20.0)))
            labels.append(ci)
    X, y = np.array(feats), np.array(labels)
    correct = 0
    for i in range(len(X)):
        others = np.arange(len(X)) != i
        centroids = np.stack([X[others & (y == k)].mean(0) for k in range(len(CATALOGUE))])
        correct += int(np.argmin(((centroids - X[i]) ** 2).sum(1)) == y[i])
    assert correct / len(X) >= 0.8
    spread = [np.linalg.norm(X[y == k] - X[y == k].mean(0), axis=1).mean() for k in range(len(CATALOGUE))]
    assert min(spread) > 3.0  # dB-scale spread: no class renders the same spectrum every time
