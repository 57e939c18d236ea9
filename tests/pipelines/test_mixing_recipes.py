"""Recipe semantics, query sampling, reuse limits and determinism of the planner."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.mixing.config import MixingConfig
from pipelines.mixing.job import MixPlanner, MixStage, make_key
from pipelines.mixing.pool import PoolError, SourcePool
from pipelines.mixing.render import render
from toy_sources import TOY_CLASSES, write_toy_sources

SR = 16000
RECIPES = ["triplets", "noisy_music", "noisy_speech", "noisy_sound", "promptsep", "opensep"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_toy_sources(tmp_path_factory.mktemp("toy"), per_class=3, seconds=1.5)


@pytest.fixture(scope="module")
def pool(manifest: Path) -> SourcePool:
    return SourcePool.from_manifest(manifest)


def _planner(pool: SourcePool, recipe: str, seed: int = 1, **over) -> MixPlanner:
    return MixPlanner(MixingConfig(recipe=recipe, duration_s=1.0, **over), pool, seed, SR)


@pytest.mark.parametrize("recipe", RECIPES)
def test_targets_never_contain_residual_classes(pool: SourcePool, recipe: str) -> None:
    planner = _planner(pool, recipe)
    for i in range(40):
        spec = planner.spec(i)
        assert not set(spec.target_labels) & set(spec.residual_labels), spec.key
        assert spec.key == make_key(recipe, 1, i) and "." not in spec.key
        if spec.silent_target:
            assert spec.positive_labels[0] not in spec.residual_labels
        else:
            assert spec.positive_labels == spec.target_labels and spec.negative_labels == spec.residual_labels
            assert spec.target_labels and spec.residual_labels


def test_promptsep_structure(pool: SourcePool) -> None:
    planner = _planner(pool, "promptsep", queries={"silence_alpha": 0.0})
    sizes, operators = Counter(), Counter()
    for i in range(200):
        spec = planner.spec(i)
        n = len(spec.components)
        sizes[n] += 1
        operators[spec.operator] += 1
        assert len({c.labels[0] for c in spec.components}) == n
        named = {spec.components[k].labels[0] for k in spec.info["named"]}
        if spec.operator == "extract":
            assert set(spec.target_labels) == named
        else:
            assert set(spec.residual_labels) == named
        assert all(-3 <= s <= 10 for s in spec.info["snr_db"][1:])
        assert all(c.onset_s + c.duration_s <= 1.0 + 1e-6 for c in spec.components)
    assert set(sizes) == {2, 3, 4, 5}
    assert 70 < operators["remove"] < 130


def test_opensep_unit_yields_singles_and_pairs(pool: SourcePool) -> None:
    planner = _planner(pool, "opensep", queries={"silence_alpha": 0.0})
    specs = [planner.spec(i) for i in range(6)]
    clips = {tuple(c.clip_id for c in s.components) for s in specs}
    assert len(clips) == 1  # one z, six targets
    assert [len(s.target_labels) for s in specs] == [1, 1, 1, 1, 2, 2]
    assert planner.spec(6).info["unit"] == 1
    full = _planner(pool, "opensep", opensep={"pair_targets": "all"})
    assert len({full.spec(i).info["unit"] for i in range(10)}) == 1


def test_triplets_from_pool_are_n_tuples_with_offsets(pool: SourcePool) -> None:
    planner = _planner(pool, "triplets", queries={"silence_alpha": 0.0})
    spec0 = planner.spec(0)
    n = len(spec0.components)
    assert 2 <= n <= 4
    unit = [planner.spec(i) for i in range(n)]
    assert {s.info["unit"] for s in unit} == {0}
    assert [s.target_labels[0] for s in unit] == [c.labels[0] for c in spec0.components]
    for s in unit:
        ref = s.info["ref_level_db"]
        for c, off in zip(s.components, s.info["offsets_db"]):
            assert abs(off) <= 5.0 and c.level_db == pytest.approx(ref + off)
    music = {label for label, dom in TOY_CLASSES if dom == "music"}
    assert set(spec0.residual_labels) <= music


def test_triplets_from_stems_folder_are_aligned(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for song in ("song_a", "song_b"):
        for stem in ("vocals", "drums", "bass"):
            path = tmp_path / song / f"{stem}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(2 * SR)).astype(np.float32), SR)
    pool = SourcePool.from_stems_folder(tmp_path)
    planner = _planner(pool, "triplets", queries={"silence_alpha": 0.0})
    specs = [planner.spec(i) for i in range(6)]
    assert sorted(s.target_labels[0] for s in specs[:3]) == ["bass", "drums", "vocals"]
    for s in specs:
        assert len({c.source_start_s for c in s.components}) == 1
        assert all(abs(c.gain_db) <= 5 for c in s.components)
    assert {s.info["song"] for s in specs} == {"song_a", "song_b"}
    t = render(specs[0], lambda p, sr: sf.read(p, dtype="float32")[0])
    assert np.array_equal(t.mixture, t.target + t.residual)


def test_query_modes_and_silence_rate(pool: SourcePool) -> None:
    planner = _planner(pool, "noisy_sound", queries={"silence_alpha": 0.2})
    modes, silent = Counter(), 0
    n = 1500
    for i in range(n):
        spec = planner.spec(i)
        if spec.silent_target:
            silent += 1
            assert spec.query_mode in ("pos", "posneg") and spec.target_labels == []
            assert spec.positive_labels[0] in pool.classes
            assert spec.positive_labels[0] not in {label for c in spec.components for label in c.labels}
        else:
            modes[spec.query_mode] += 1
    assert abs(silent / n - 0.2) < 0.035
    total = sum(modes.values())
    assert abs(modes["pos"] / total - 0.25) < 0.04
    assert abs(modes["neg"] / total - 0.25) < 0.04
    assert abs(modes["posneg"] / total - 0.5) < 0.05


def test_silence_target_renders_all_zero(manifest: Path) -> None:
    stage = MixStage(MixingConfig(recipe="promptsep", duration_s=1.0, queries={"silence_alpha": 1.0}), seed=0, sources=manifest)
    t = stage.render_index(0)
    assert t.spec.silent_target and not np.any(t.target) and np.any(t.residual)
    assert t.spans == [] and np.array_equal(t.mixture, t.residual)


def test_reuse_limit_within_epoch(pool: SourcePool) -> None:
    planner = _planner(pool, "promptsep", max_uses_per_epoch=1)
    per_epoch: dict[int, Counter] = {}
    for i in range(60):
        spec = planner.spec(i)
        per_epoch.setdefault(spec.info["epoch"], Counter()).update(c.clip_id for c in spec.components)
    assert len(per_epoch) >= 3
    for counts in per_epoch.values():
        assert max(counts.values()) == 1
    unlimited = _planner(pool, "promptsep", max_uses_per_epoch=0)
    uses = Counter(c.clip_id for i in range(60) for c in unlimited.spec(i).components)
    assert max(uses.values()) > 1 and {unlimited.spec(i).info["epoch"] for i in range(60)} == {0}


def test_planning_is_deterministic_and_seed_dependent(pool: SourcePool) -> None:
    a = _planner(pool, "promptsep", seed=4)
    b = _planner(pool, "promptsep", seed=4)
    c = _planner(pool, "promptsep", seed=5)
    assert b.spec(25) == a.spec(25)  # b jumps straight to 25 (a resumed job)
    assert [a.spec(i) for i in range(10)] == [b.spec(i) for i in range(10)]
    assert [a.spec(i).components for i in range(10)] != [c.spec(i).components for i in range(10)]
    other = _planner(pool, "opensep", seed=4)
    assert a.spec(0).components[0].clip_id != other.spec(0).components[0].clip_id or a.spec(0).prompt != other.spec(0).prompt


def test_pool_errors_name_the_problem(tmp_path: Path, manifest: Path) -> None:
    small = write_toy_sources(tmp_path, classes=[("dog", "sound"), ("rain", "sound")], per_class=1)
    with pytest.raises(PoolError, match="needs 4 distinct classes"):
        _planner(SourcePool.from_manifest(small), "opensep")
    with pytest.raises(PoolError, match="no clips in split"):
        SourcePool.from_manifest(manifest, split="test")
    with pytest.raises(PoolError, match="does not exist"):
        SourcePool.from_manifest(tmp_path / "nope")


def test_noisy_sound_pairings_with_wild_scenes(tmp_path: Path, pool: SourcePool) -> None:
    from toy_sources import write_toy_scenes

    wild = SourcePool.from_scenes(write_toy_scenes(tmp_path, num=12))
    cfg = MixingConfig(recipe="noisy_sound", duration_s=1.0, queries={"silence_alpha": 0.0})
    planner = MixPlanner(cfg, pool, 2, SR, wild=wild)
    seen = Counter()
    for i in range(120):
        spec = planner.spec(i)
        pairing = spec.info["pairing"]
        seen[pairing] += 1
        target_ids = [c.clip_id for c in spec.components if c.role == "target"]
        noise_ids = [c.clip_id for c in spec.components if c.role == "residual"]
        assert all(cid.startswith("scene-") == (pairing == "wild+wild") for cid in target_ids)
        assert all(cid.startswith("scene-") == (pairing != "clean+clean") for cid in noise_ids)
        assert not set(spec.target_labels) & set(spec.residual_labels)
    assert set(seen) == {"clean+clean", "clean+wild", "wild+wild"}
    without = MixPlanner(cfg, pool, 2, SR)
    assert {without.spec(i).info["pairing"] for i in range(20)} == {"clean+clean"}
