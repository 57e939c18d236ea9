"""The review page builder (engine/review/) on a synthetic run directory of 10,000 candidates.

The run directory is built from real parts, not mocks: scene WAV files, a randomly initialised `tiny` separator
checkpoint (tests/fixtures/separator_data.py) that re-separates the dropped candidates, and a candidates table
decided by the project's own decision stages (pipelines.filters.decision_stages). What is tested: the sample is
deterministic and lies near each threshold on the right side; the page's size is bounded however many candidates
there are (players only for the sampled ones, table capped); the page references nothing outside its folder.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from engine.review import ReviewError, build_review
from engine.review.run_data import rules_of
from engine.review.sample import sample_near_threshold
from pipelines.filters import FilterConfig, decision_stages
from separator_data import untrained_checkpoint

SR = 16000
N = 10_000
SCENES = 8
LABELS = ("dog", "siren", "piano", "rain")


def _thresholds(cfg: FilterConfig) -> dict:
    keys = ("itt_min_db", "sst_min_db", "clap_target_min", "clap_residual_max", "pc_max", "silence_ratio_max", "judge_min")
    return {k: getattr(cfg, k) for k in keys} | {"enabled": {k: getattr(cfg, f"{k}_enabled") for k in
                                                          ("remix", "clap_target", "clap_residual", "pc", "silence", "judge")}}


def make_run(root: Path, n: int = N) -> Path:
    """A run directory as the engine leaves it after filter_0 (the files build_review reads)."""
    rng = np.random.default_rng(0)
    (root / "steps").mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"config_hash": "synthetic", "run_id": "x"}))
    (root / "config.resolved.yaml").write_text("run:\n  name: synthetic\n")
    scene_paths = []
    t = np.arange(2 * SR) / SR
    for s in range(SCENES):
        path = root / "corpus" / f"scene-{s}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.3 * np.sin(2 * np.pi * (220 + 40 * s) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32), SR)
        scene_paths.append(str(path))
    ckpt = untrained_checkpoint(root / "iter0" / "separator" / "best.pt")
    scene = rng.integers(0, SCENES, n)
    label = [LABELS[i % len(LABELS)] for i in range(n)]
    re_sdr = rng.uniform(-5, 25, n)
    batch = {
        "candidate_id": np.array([f"scene-{s}-q{i:05d}" for i, s in enumerate(scene)], dtype=object),
        "scene_id": np.array([f"scene-{s}" for s in scene], dtype=object),
        "query_index": np.arange(n),
        "label": np.array(label, dtype=object),
        "positive_text": np.array([f"a {lb}" for lb in label], dtype=object),
        "negative_text": np.array([None if i % 3 == 0 else "rain falling" for i in range(n)], dtype=object),
        "query_mode": np.array(["pos" if i % 3 == 0 else "posneg" for i in range(n)], dtype=object),
        "gain_db": np.where(np.arange(n) % 5 == 0, -6.0, 0.0),
        "sample_rate": np.full(n, SR),
        "duration_s": np.full(n, 2.0),
        "re_sdr_db": re_sdr,
        "re_sisdr_db": re_sdr - rng.uniform(0, 3, n),
        "scene_path": np.array([scene_paths[s] for s in scene], dtype=object),
        "clap_target": rng.uniform(-0.2, 0.8, n),
        "clap_residual": rng.uniform(-0.3, 0.4, n),
        "pc_target": rng.uniform(1, 4, n),
        "silence_ratio": rng.uniform(0, 1, n),
        "judge_overall": np.where(np.arange(n) % 97 == 0, np.nan, rng.uniform(2, 5, n)),  # a few never measured
        "true_sdr_db": rng.normal(5, 4, n),
    }
    cfg = FilterConfig(judge_enabled=False)
    for stage in decision_stages(cfg):
        batch = stage(batch)
    table_dir = root / "iter0" / "filter" / "table"
    table_dir.mkdir(parents=True)
    from pipelines.filters.table import candidates_to_table

    pq.write_table(candidates_to_table(batch), table_dir / "part-scenes-00000.parquet")
    (root / "iter0" / "filter" / "kept_audio").mkdir()
    stats = {"iteration": 0, "candidates": n, "kept_itt": int(np.sum(batch["keep"])), "thresholds": _thresholds(cfg),
             "candidates_table": str(table_dir), "kept_audio": str(root / "iter0" / "filter" / "kept_audio")}
    (root / "steps" / "filter_0.json").write_text(json.dumps({"step": "filter_0", "outputs": stats}))
    (root / "steps" / "separator_0.json").write_text(json.dumps({"step": "separator_0", "outputs": {
        "checkpoint": str(ckpt), "checkpoint_hash": "abc123"}}))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("review") / "synthetic")


def page_data(index: Path) -> dict:
    text = index.read_text()
    m = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', text, re.S)
    assert m, "the page embeds its data"
    return json.loads(m.group(1))


def test_sample_is_deterministic_near_the_threshold_and_on_its_side(run_dir):
    from pipelines.filters.table import read_candidates

    table = read_candidates(run_dir / "iter0" / "filter" / "table")
    rules = rules_of(json.loads((run_dir / "steps" / "filter_0.json").read_text())["outputs"]["thresholds"])
    picks = sample_near_threshold(table, rules, per_side=3, seed=0)
    assert picks == sample_near_threshold(table, rules, per_side=3, seed=0)
    assert len(picks) == 2 * 3 * len(rules)  # every rule has kept and dropped candidates here
    assert any(sample_near_threshold(table, rules, per_side=3, seed=s) != picks for s in range(1, 4))
    for rule in rules:
        values = np.asarray(table[rule.column], dtype=np.float64)
        passed = rule.passes(values)
        for side, mask in (("kept", passed), ("dropped", ~passed & np.isfinite(values))):
            mine = [p for p in picks if p.rule == rule.name and p.side == side]
            assert len(mine) == 3 and len({p.row for p in mine}) == 3
            assert all(bool(passed[p.row]) is (side == "kept") for p in mine)
            band = np.sort(np.abs(values[mask] - rule.threshold))[5]  # the 6 nearest on this side
            assert all(abs(values[p.row] - rule.threshold) <= band and p.distance <= band for p in mine)
    # a disabled filter (judge here) is still sampled by what its threshold would do; unmeasured rows never are
    judge = [p for p in picks if p.rule == "judge"]
    assert judge and all(np.isfinite(table["judge_overall"][p.row]) for p in judge)


def test_page_size_is_bounded_and_rebuilds_identically(run_dir):
    index = build_review(run_dir, per_filter=2, seed=0)
    assert index == run_dir / "review" / "index.html"
    data = page_data(index)
    it = data["iterations"][0]
    rules = len(it["rules"])
    assert it["table"]["rows"] == N and not it["table"]["capped"]
    assert len(it["samples"]) == 2 * 2 * rules and len(it["media"]) <= 2 * 2 * rules
    audio = sorted((run_dir / "review" / "media").rglob("*.wav"))
    images = sorted((run_dir / "review" / "media").rglob("*.png"))
    assert 0 < len(audio) <= 3 * 2 * 2 * rules and len(images) == len(audio)
    # every excerpt is 16-bit PCM at the run's rate and at most excerpt_s long; the dropped ones were re-separated
    for p in audio:
        info = sf.info(p)
        assert info.subtype == "PCM_16" and info.samplerate == SR and info.frames <= 4 * SR
    assert {m["source"] for m in it["media"].values()} == {"re-separated"}
    for m in it["media"].values():
        for role in ("mixture", "track", "residual"):
            assert (run_dir / "review" / m[role]["audio"]).is_file() and (run_dir / "review" / m[role]["image"]).is_file()
    total = sum(p.stat().st_size for p in (run_dir / "review").rglob("*") if p.is_file())
    assert total < 12e6, f"review folder of {total / 1e6:.1f} MB for {N} candidates"
    # same run, same seed: the same bytes (no time stamps, no random names)
    first = index.read_bytes()
    assert build_review(run_dir, per_filter=2, seed=0).read_bytes() == first
    # a rebuild replaces the folder: no stale excerpts of the previous sample stay behind
    it = page_data(build_review(run_dir, per_filter=1, seed=0))["iterations"][0]
    referenced = {m[r][k] for m in it["media"].values() for r in ("mixture", "track", "residual") for k in ("audio", "image")}
    on_disk = {p.relative_to(run_dir / "review").as_posix() for p in (run_dir / "review" / "media").rglob("*") if p.is_file()}
    assert on_disk == referenced and len(on_disk) < len(audio) + len(images)
    assert not list(run_dir.glob(".review-*"))


def test_table_cap_keeps_the_sampled_candidates(run_dir):
    index = build_review(run_dir, per_filter=1, seed=3, max_rows=500)
    it = page_data(index)["iterations"][0]
    table = it["table"]
    assert table["capped"] and table["rows"] == 500 and table["rows_total"] == N
    assert all(len(v) == 500 for v in table["data"].values())
    ids = set(table["data"]["candidate_id"])
    assert {s["candidate_id"] for s in it["samples"]} <= ids  # every card's row is in the table (lineage links)


def test_page_references_nothing_outside_its_folder(run_dir):
    index = build_review(run_dir, per_filter=1)
    text = index.read_text()
    # the only URL in the page is the SVG namespace name, an identifier that is never fetched
    urls = set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'<>)]*", text, re.I))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r"""(src|href)\s*=\s*["']//""", text) and "@import" not in text and "<link rel=\"stylesheet\"" not in text
    for ref in re.findall(r"""(?:src|href)="([^"#][^"]*)\"""", text):
        if not ref.startswith("data:"):
            assert (index.parent / ref).is_file(), ref
    data = page_data(index)
    for m in data["iterations"][0]["media"].values():
        assert all(not m[r]["audio"].startswith(("/", "..")) for r in ("mixture", "track", "residual"))


def test_bad_run_directories_are_named(tmp_path):
    with pytest.raises(ReviewError, match="no run.json"):
        build_review(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "config.resolved.yaml").write_text("run:\n  name: x\n")
    (tmp_path / "steps").mkdir()
    with pytest.raises(ReviewError, match="no finished filter step"):
        build_review(tmp_path)
    (tmp_path / "steps" / "filter_0.json").write_text("{not json")
    with pytest.raises(ReviewError, match=r"filter_0\.json: unreadable JSON"):
        build_review(tmp_path)
    assert not list(tmp_path.glob(".review-*")) and not (tmp_path / "review").exists()
