"""ITT and SST sample construction from tier samples, and the ratio mixer."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipelines.mixing.prompts import query_text
from pipelines.training_data import ITTBuilder, TrainingDataError, normalised_ratios, sst_sample, tier_sample
from storage.audio import decode_audio, encode_audio

SR = 8000


def _row(scene_id, label, labels, seed):
    rng = np.random.default_rng(seed)
    scene = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    target = (0.5 * scene).astype(np.float32)
    others = [lbl for lbl in labels if lbl != label]
    return {
        "candidate_id": f"{scene_id}-q{labels.index(label):02d}", "scene_id": scene_id, "query_index": labels.index(label),
        "label": label, "positive_text": query_text([label]), "negative_text": query_text(others),
        "positive_labels": [label], "negative_labels": others, "scene_labels": labels, "query_mode": "posneg", "gain_db": 0.0,
        "sample_rate": SR, "mixture": scene, "target": target, "re_sdr_db": 17.0, "re_sisdr_db": 16.0, "clap_target": 0.5,
        "judge_overall": float("nan"),
    }


def _decoded(sample):
    return {"__key__": sample["__key__"], "mix": decode_audio(sample["mix.flac"])[0], "target": decode_audio(sample["target.flac"])[0],
            "residual": decode_audio(sample["residual.flac"])[0], "json": sample["json"]}


def test_tier_sample_records_scores_thresholds_versions_and_lineage():
    row = _row("scene-1", "dog", ["dog", "rain", "siren"], 0)
    s = tier_sample(row, "sst", {"sst_min_db": 15.0}, {"separator": "abc123"}, "cfg1", "v0", encode_audio)
    meta = s["json"]
    assert meta["tier"] == "sst" and meta["thresholds"] == {"sst_min_db": 15.0}
    assert meta["model_versions"]["separator"] == "abc123"
    assert meta["scores"]["re_sdr_db"] == 17.0 and meta["scores"]["judge_overall"] is None
    assert meta["scene_lineage"]["scene_id"] == "scene-1" and meta["residual_labels"] == ["rain", "siren"]
    d = _decoded(s)
    np.testing.assert_allclose(d["mix"], d["target"] + d["residual"], atol=1e-4)
    with pytest.raises(TrainingDataError):
        tier_sample(row, "gold", {}, {}, "", "", encode_audio)


def test_sst_uses_scene_as_mixture_label_positive_other_labels_negative():
    row = _row("scene-1", "rain", ["dog", "rain", "siren"], 1)
    s = sst_sample(_decoded(tier_sample(row, "sst", {}, {}, "c", "v", encode_audio)))
    np.testing.assert_allclose(s["mix"], row["mixture"], atol=1e-4)
    np.testing.assert_allclose(s["target"], row["target"], atol=1e-4)
    assert s["json"]["positive_labels"] == ["rain"] and s["json"]["negative_labels"] == ["dog", "siren"]
    assert s["json"]["positive_text"] == query_text(["rain"]) and s["json"]["negative_text"] == query_text(["dog", "siren"])
    itt_only = _decoded(tier_sample(row, "itt", {}, {}, "c", "v", encode_audio))
    with pytest.raises(TrainingDataError, match="SST needs"):
        sst_sample(itt_only)


def test_itt_mixes_track_with_other_labels_and_sums_exactly():
    tracks = [_decoded(tier_sample(_row(f"s{i}", lbl, ["dog", "rain", "bell"], i), "itt", {}, {}, "c", "v", encode_audio))
              for i, lbl in enumerate(["dog", "rain", "bell", "dog"])]
    clean = [{"__key__": "clean-siren", "target": np.ones(SR // 2, np.float32) * 0.1, "json": {"target_labels": ["siren"], "sample_rate": SR}}]
    builder = ITTBuilder(tracks, clean, seed=3, max_others=2)
    samples = list(itertools.islice(iter(builder), 20))
    for s in samples:
        meta = s["json"]
        label = meta["positive_labels"][0]
        assert label not in meta["negative_labels"] and len(meta["negative_labels"]) in (1, 2)
        assert len(set(meta["negative_labels"])) == len(meta["negative_labels"])
        np.testing.assert_allclose(s["mix"], s["target"] + s["residual"], atol=1e-6)
        assert np.abs(s["residual"]).sum() > 0
        assert len(s["mix"]) == SR
    assert any("siren" in s["json"]["negative_labels"] for s in samples)  # clean pool is used
    again = list(itertools.islice(iter(ITTBuilder(tracks, clean, seed=3, max_others=2)), 20))
    assert [s["__key__"] for s in again] == [s["__key__"] for s in samples]
    np.testing.assert_array_equal(again[5]["mix"], samples[5]["mix"])  # seeded


def test_normalised_ratios_drop_missing_streams_and_renormalise():
    assert normalised_ratios({"synthetic": 0.5, "itt": 0.25, "sst": 0.25}, ["synthetic", "itt"]) == {
        "synthetic": 2 / 3, "itt": 1 / 3}
    with pytest.raises(TrainingDataError):
        normalised_ratios({"itt": 1.0}, ["synthetic"])
