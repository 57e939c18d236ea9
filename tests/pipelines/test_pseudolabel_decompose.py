"""Decomposition queries, caption prompts, windows, variants and the pseudo-label stage on an oracle separator.

The oracle separator knows each scene's stems (it is the ideal separator the engine approximates), so the tests
can check that the stage asks the right questions and assembles the right tracks, residuals and remix scores.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.mixing.prompts import phrase_for
from pipelines.pseudolabel.candidates import Variant, best_variant, rerank_score, variants
from pipelines.pseudolabel.config import PseudoLabelConfig
from pipelines.pseudolabel.decompose import exclusive_labels, label_queries
from pipelines.pseudolabel.prompted import prompt_queries, split_caption
from pipelines.pseudolabel.stages import PseudoLabel


def with_models(stage: PseudoLabel, separator, clap=None, judge=None) -> PseudoLabel:
    """The stage with in-memory models (what `setup` would load from checkpoints in a worker)."""
    stage.separator, stage.clap, stage.judge = separator, clap, judge
    return stage
from pipelines.pseudolabel.windows import window_starts, windowed

SR = 1000


def test_label_queries_positive_and_negatives():
    qs = label_queries("s1", ["dog", "rain", "siren"])
    assert len(qs) == 3
    assert [q.label for q in qs] == ["dog", "rain", "siren"]
    assert qs[0].negative_labels == ["rain", "siren"]
    assert qs[1].negative_labels == ["dog", "siren"]
    assert qs[0].positive_text == phrase_for("dog")
    assert qs[0].negative_text == f"{phrase_for('rain')}, {phrase_for('siren')}"
    assert len({q.candidate_id for q in qs}) == 3


def test_labels_made_exclusive_with_ontology():
    parents = {("music", "piano"), ("animal", "dog")}
    is_anc = lambda a, b: (a, b) in parents  # noqa: E731
    assert exclusive_labels(["music", "piano", "piano", "rain"], is_anc) == ["piano", "rain"]
    qs = label_queries("s", ["animal", "dog", "rain"], is_anc)
    assert [q.label for q in qs] == ["dog", "rain"] and qs[0].negative_labels == ["rain"]
    single = label_queries("s", ["dog"])
    assert single[0].negative_text is None and single[0].negative_labels == []


def test_caption_split_and_prompted_queries():
    assert split_caption("Children yelling. A dog barking; rain and a siren wailing") == [
        "children yelling", "a dog barking", "rain", "a siren wailing"]
    qs = prompt_queries("s", ["a dog barking", "rain", "rain"])
    assert [q.positive_text for q in qs] == ["a dog barking", "rain"]
    assert all(q.negative_text is None for q in qs)


def test_windows_reconstruct_identity_and_cover_everything():
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(30, 40, 30) == [0]
    x = np.random.default_rng(0).standard_normal((2, 5300)).astype(np.float32)
    y = windowed(lambda c: c, x, SR, window_s=1.0, overlap_s=0.25)
    np.testing.assert_allclose(y, x, atol=1e-6)
    calls = []
    windowed(lambda c: calls.append(c.shape) or c * 0, x, SR, 1.0, 0.25)
    assert len(calls) == 7 and all(s == (2, 1000) for s in calls)
    # a per-window constant shows the crossfade: values in overlaps lie between neighbouring windows
    counter = iter(range(100))
    z = windowed(lambda c: np.full_like(c, float(next(counter))), np.zeros((1, 2500), np.float32), SR, 1.0, 0.5)
    assert z[0, 0] == 0 and z[0, -1] == pytest.approx(3.0) and np.all(np.diff(z[0]) >= -1e-6)  # 4 windows, ramps between
    assert 0 < z[0, 750] < 1


def test_variants_and_rerank():
    cfg = PseudoLabelConfig(num_candidates=3)
    assert variants(cfg) == [Variant("posneg", 0.0), Variant("posneg", -6.0), Variant("pos", 0.0)]
    with pytest.raises(ValueError, match="only 4 variants"):
        variants(PseudoLabelConfig(num_candidates=5))
    s = rerank_score(np.array([[4.0, 3.0], [2.0, np.nan]]), np.array([[0.1, 0.4], [0.5, 0.9]]), 1.0, 5.0)
    assert list(best_variant(s)) == [1, 0]  # 3+2.0 > 4+0.5; NaN loses


class OracleSeparator:
    """Returns the stem(s) named by the positive text (scaled like the input), ignoring the negative text."""

    def __init__(self, stems: dict[str, np.ndarray], gain_error: dict[str, float] | None = None) -> None:
        self.stems = stems
        self.gain_error = gain_error or {}
        self.calls: list[tuple[list[str], list[str | None]]] = []

    def separate(self, mixtures, sr, positive_texts, negative_texts):
        self.calls.append((list(positive_texts), list(negative_texts)))
        mix_total = sum(self.stems.values())
        out = []
        for m, text in zip(mixtures, positive_texts):
            label = next(lbl for lbl in self.stems if phrase_for(lbl) == text)
            # scale to the (windowed, gained) input: match the stem segment by least squares on the mixture
            seg = self._segment(mix_total, m)
            stem = self.stems[label][seg]
            g = float(np.dot(m, mix_total[seg]) / np.dot(mix_total[seg], mix_total[seg]))
            out.append(stem * g * self.gain_error.get(label, 1.0))
        return np.stack(out).astype(np.float32)

    @staticmethod
    def _segment(total, chunk):
        n = chunk.shape[-1]
        for s in range(0, len(total) - n + 1):
            if np.allclose(total[s:s + n] * (chunk[0] / total[s] if total[s] else 1.0), chunk, atol=1e-4):
                return slice(s, s + n)
        return slice(0, n)


def _scene(labels, seconds=2.5):
    rng = np.random.default_rng(1)
    n = int(seconds * SR)
    stems = {lbl: (0.1 * rng.standard_normal(n)).astype(np.float32) for lbl in labels}
    return stems, sum(stems.values()).astype(np.float32)


def test_stage_emits_one_track_per_label_with_residuals_and_remix():
    stems, scene = _scene(["dog", "rain", "siren"], seconds=0.8)
    sep = OracleSeparator(stems)
    stage = with_models(PseudoLabel(PseudoLabelConfig()), sep)
    out = stage({"scene_id": ["s1"], "mixture": [scene], "sample_rate": [SR], "event_labels": [["dog", "rain", "siren"]]})
    assert out["label"] == ["dog", "rain", "siren"]
    assert out["negative_labels"][0] == ["rain", "siren"]
    assert sep.calls[0][1][0] == f"{phrase_for('rain')}, {phrase_for('siren')}"  # negatives were asked for
    for i, lbl in enumerate(out["label"]):
        np.testing.assert_allclose(out["target"][i], stems[lbl], atol=1e-5)
        np.testing.assert_allclose(out["target"][i] + out["residual"][i], scene, atol=1e-5)
    assert out["re_sdr_db"][0] > 60 and out["re_sisdr_db"][0] > 60


def test_stage_skips_scenes_below_min_events_and_counts_them():
    stems, scene = _scene(["dog"], seconds=0.5)
    stage = with_models(PseudoLabel(PseudoLabelConfig(min_events=2)), OracleSeparator(stems))
    out = stage({"scene_id": ["lonely"], "mixture": [scene], "sample_rate": [SR], "event_labels": [["dog"]]})
    assert out == {}
    assert stage.take_counts() == {"scenes_skipped_min_events": 1}  # the executor adds it to the run summary


def test_missing_track_lowers_remix_score():
    stems, scene = _scene(["dog", "rain"], seconds=0.5)
    bad = OracleSeparator(stems, gain_error={"rain": 0.0})
    out = with_models(PseudoLabel(PseudoLabelConfig()), bad)({"scene_id": ["s"], "mixture": [scene], "sample_rate": [SR], "event_labels": [["dog", "rain"]]})
    assert out["re_sdr_db"][0] < 6


class ClapByEnergy:
    """A scorer rewarding estimates whose energy matches the mixture's: enough to check the rerank wiring."""

    def score(self, texts, audios, sr):
        return -np.abs(np.log10(np.mean(np.asarray(audios) ** 2, axis=1) + 1e-12) + 2.0)


class FlatJudge:
    def score(self, mixtures, outputs, texts, sr, others=None):
        return {"overall": np.full(len(outputs), 3.0)}


def test_long_scene_windowed_and_reranked():
    stems, scene = _scene(["dog", "rain"], seconds=2.5)
    cfg = PseudoLabelConfig(num_candidates=2, window_s=1.0, overlap_s=0.2, gains_db=[0.0, -6.0])
    sep = OracleSeparator(stems, gain_error={"dog": 1.0})
    stage = with_models(PseudoLabel(cfg, clap={}, judge={}), sep, ClapByEnergy(), FlatJudge())
    out = stage({"scene_id": ["s"], "mixture": [scene], "sample_rate": [SR], "event_labels": [["dog", "rain"]]})
    assert len(out["label"]) == 2 and out["num_variants"] == [2, 2]
    assert len(sep.calls) == 2 * 3  # 2 variants x 3 windows of a 2.5 s scene
    assert np.isfinite(out["rerank_score"]).all()
    np.testing.assert_allclose(out["target"][0], stems["dog"], atol=1e-4)
    with pytest.raises(ValueError, match="reranking"):
        PseudoLabel(cfg)


def test_caption_mode_prompts_each_phrase_without_negatives():
    stems, scene = _scene(["dog", "rain"], seconds=0.5)
    caption = f"{phrase_for('dog')} and {phrase_for('rain')}"
    sep = OracleSeparator(stems)
    out = with_models(PseudoLabel(PseudoLabelConfig(mode="captions")), sep)(
        {"scene_id": ["s"], "mixture": [scene], "sample_rate": [SR], "caption": [caption]})
    assert out["positive_text"] == [phrase_for("dog"), phrase_for("rain")]
    assert out["negative_text"] == [None, None] and sep.calls[0][1] == [None, None]
    np.testing.assert_allclose(out["target"][1], stems["rain"], atol=1e-5)
    assert out["re_sdr_db"][0] > 60
