"""`engine.accumulate_tiers`: a retrain learns from the kept tiers of every earlier iteration, a track kept again
only in its newest version (same scene and label), and the flag is part of the retrain's identity."""
from __future__ import annotations

import zlib

import numpy as np
import soundfile as sf

from engine.engine_steps import write_tier_store
from engine.model_steps import tier_tracks
from engine.run_config import load
from engine.steps import open_run, sections_of, training_tiers
from pipelines.mixing.prompts import query_text
from storage.audio import encode_audio

SR = 16000


def _row(tmp, scene_id: str, label: str, labels: list[str], gain: float) -> dict:
    rng = np.random.default_rng(zlib.crc32(f"{scene_id}/{label}".encode()))
    scene = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    path = tmp / f"{scene_id}.wav"
    if not path.exists():
        sf.write(path, scene, SR, subtype="FLOAT")
    scene = sf.read(path, dtype="float32")[0]
    others = [x for x in labels if x != label]
    return {"candidate_id": f"{scene_id}-q{labels.index(label):02d}", "scene_id": scene_id, "query_index": labels.index(label),
            "label": label, "positive_text": query_text([label]), "negative_text": query_text(others),
            "positive_labels": [label], "negative_labels": others, "scene_labels": labels, "query_mode": "posneg",
            "gain_db": 0.0, "sample_rate": SR, "scene_path": str(path), "re_sdr_db": 17.0, "re_sisdr_db": 16.0,
            "target_flac": encode_audio((gain * scene).astype(np.float32), SR)}


def _store(cfg, root, k: int, rows: list[dict]) -> dict:
    store = root / f"iter{k}" / "tiers" / "itt"
    manifest = write_tier_store(store, rows, "itt", cfg, k, {"checkpoint_hash": f"sep{k}"}, {})
    return {"dir": str(store), "count": int(manifest["num_samples"]), "hours": float(manifest["hours"])}


def test_accumulated_tiers_keep_each_track_once_in_its_newest_version(tmp_path):
    cfg = load(None, ["engine.backend=inprocess", "engine.accumulate_tiers=true"])
    ctx = open_run(cfg, tmp_path / "runs", "acc")
    labels = ["dog", "rain", "siren"]
    old = _store(cfg, tmp_path, 0, [_row(tmp_path, "s1", "dog", labels, 0.25), _row(tmp_path, "s2", "rain", labels, 0.25)])
    ctx.ws.step("tiers_0", lambda: {"itt": old, "sst": {"dir": "", "count": 0, "hours": 0.0}})
    new = _store(cfg, tmp_path, 1, [_row(tmp_path, "s1", "dog", labels, 0.5), _row(tmp_path, "s3", "siren", labels, 0.5)])
    current = {"itt": new, "sst": {"dir": "", "count": 0, "hours": 0.0}}

    merged = training_tiers(ctx, 1, current)
    assert merged["itt"]["dirs"] == [new["dir"], old["dir"]] and merged["itt"]["count"] == 4
    assert merged["sst"] == current["sst"]  # an empty tier stays empty
    tracks = tier_tracks(merged["itt"], SR)
    by_scene = {t["json"]["scene_lineage"]["scene_id"]: t for t in tracks}
    assert sorted(by_scene) == ["s1", "s2", "s3"]  # s1/dog once, though both iterations kept it
    # the surviving s1 track is iteration 1's (gain 0.5 of the scene), not iteration 0's (gain 0.25)
    ratio = float(np.std(by_scene["s1"]["target"]) / np.std(by_scene["s1"]["mix"]))
    assert abs(ratio - 0.5) < 0.02, ratio
    assert tier_tracks(new, SR) and len(tier_tracks(new, SR)) == 2  # a single store reads as before

    off = open_run(load(None, ["engine.backend=inprocess", "engine.accumulate_tiers=false"]), tmp_path / "runs", "plain")
    assert training_tiers(off, 1, current) is current  # off: iteration k-1's tiers only
    assert "engine.accumulate_tiers" in sections_of("separator_2")


def test_an_unknown_checkpoint_pick_fails_before_any_training(tmp_path):
    import pytest

    from engine.model_steps import train_separator_step

    cfg = load(None, ["engine.backend=inprocess"])
    ctx = open_run(cfg, tmp_path / "runs", "pick")
    with pytest.raises(ValueError, match="expected best or end"):
        train_separator_step(ctx.ws, cfg, "separator_x", lambda: [], str(tmp_path / "no-val"), 10, pick="last")
    assert not (ctx.root / "separator_x").exists()
