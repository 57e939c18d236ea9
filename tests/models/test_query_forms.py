"""Queries in the user's words: one label in any written form is one separator query (inference), and training asks
each label-derived query side in drawn written forms (models/labels.py, models/separator/data.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.separator.data import make_example
from models.separator.infer import Separator
from separator_data import clearly_different, same_output, synthetic_samples, untrained_checkpoint

torch.set_num_threads(1)
SR = 16000

VIOLIN = ["violin", "Violin", "VIOLIN", "Violin, fiddle", "a violin playing"]
ALARM = ["alarm_clock", "Alarm clock", "ALARM CLOCK", "Alarm_Clock", "alarm-clock"]


def _mix(seconds: float = 1.3) -> np.ndarray:
    return next(iter(synthetic_samples(1, seconds=seconds, seed=5)))["mix"]


def test_the_same_audio_and_label_in_five_written_forms_give_the_same_output(tmp_path: Path) -> None:
    """`violin` and `Violin, fiddle` and `a violin playing` are different texts for the encoder; the separator
    encodes all of them as the label's phrase, so the outputs (and presence) are the same up to float rounding; a long
    input goes through windowing on the same path."""
    sep = Separator.load(untrained_checkpoint(tmp_path / "c.pt", query_sensitive=True), "cpu", gate_threshold=0.0)
    mix = _mix()
    outputs = {}
    for forms in (VIOLIN, ALARM):
        runs = [sep.separate_detailed([mix], SR, [f]) for f in forms]  # one call per form, as a user asks
        assert len({r.texts[0] for r in runs}) == 1
        for r in runs[1:]:
            assert same_output(r.estimates[0], runs[0].estimates[0]) and abs(r.presence[0] - runs[0].presence[0]) <= 1e-5
        outputs[forms[0]] = runs[0].estimates[0]
        assert np.abs(runs[0].estimates[0]).max() > 0
    assert clearly_different(outputs["violin"], outputs["alarm_clock"])  # the query matters in this model
    # the negative side is normalised by the same rule
    a, b = (sep.separate([mix], SR, ["a violin playing"], [neg])[0] for neg in ("Alarm_Clock", "alarm clock"))
    assert same_output(a, b)


def test_without_normalisation_the_forms_differ_and_free_text_is_its_own_query(tmp_path: Path) -> None:
    """What the canonical text buys: the raw forms reach the encoder as different queries; a free-text phrase is
    passed through, so it is a different query from the label's phrase."""
    ckpt = untrained_checkpoint(tmp_path / "c.pt", query_sensitive=True)
    mix = _mix()
    raw = Separator.load(ckpt, "cpu", gate_threshold=0.0)
    raw.normalize_queries = False
    outs = [raw.separate([mix], SR, [q])[0] for q in ("violin", "Violin, fiddle", "a violin playing")]
    assert np.abs(outs[0] - outs[2]).max() > 1e-4 and np.abs(outs[1] - outs[2]).max() > 1e-4
    sep = Separator.load(ckpt, "cpu", gate_threshold=0.0)
    phrase, free = (sep.separate([mix], SR, [q])[0] for q in ("violin", "a violin playing softly"))
    assert np.abs(phrase - free).max() > 1e-4
    assert sep.query_text("a violin playing softly") == "a violin playing softly"


def test_gate_report_says_how_much_of_each_item_was_silenced(tmp_path: Path) -> None:
    sep = Separator.load(untrained_checkpoint(tmp_path / "u.pt"), "cpu", gate_threshold=1.0)
    long, short = _mix(2.0), _mix(0.4)
    res = sep.separate_detailed([long, short], SR, ["violin", "dog"])
    assert list(res.closed) == [1.0, 1.0] and all(not np.any(e) for e in res.estimates)
    sep.gate_threshold = 0.0
    res = sep.separate_detailed([long, short], SR, ["violin", "dog"])
    assert list(res.closed) == [0.0, 0.0] and all(np.any(e) for e in res.estimates)
    assert 0.0 < res.presence[0] < 1.0


def test_training_draws_written_forms_deterministically_and_keeps_custom_texts() -> None:
    s = next(iter(synthetic_samples(1, seconds=1.0, seed=3)))
    s["json"].update(query_mode="posneg", positive_labels=["alarm_clock"], positive_text="alarm clock")
    draws = lambda seed: [make_example(s, np.random.default_rng([seed, i]), 8000, {}, 0.0, [])  # noqa: E731
                          for i in range(60)]
    a, b, old = draws(0), draws(0), [make_example(s, np.random.default_rng([0, i]), 8000, {}, 0.0, [], query_forms=False)
                                     for i in range(60)]
    assert [(e.positive, e.negative) for e in a] == [(e.positive, e.negative) for e in b]
    assert len({e.positive for e in a}) >= 6 and {e.positive for e in old} == {"alarm clock"}
    # the forms are drawn last: crop and target are what the stored-text path gives
    assert all(np.array_equal(x.mix, y.mix) and np.array_equal(x.target, y.target) for x, y in zip(a, old))
    # a custom text (a caption phrase, not the labels rendered) is asked as stored
    s["json"].update(positive_text="a clock alarm going off twice in the kitchen")
    assert {make_example(s, np.random.default_rng(i), 8000, {}, 0.0, []).positive for i in range(20)} == {
        "a clock alarm going off twice in the kitchen"}


def test_pseudo_label_queries_and_evaluation_items_match_labels_by_slug() -> None:
    from pipelines.pseudolabel.decompose import label_queries

    qs = label_queries("s1", ["Violin", "violin", "ALARM_CLOCK", "alarm clock", "dog"])
    assert [q.label for q in qs] == ["Violin", "ALARM_CLOCK", "dog"]
    assert [q.positive_text for q in qs] == ["a violin playing", "alarm clock", "a dog barking"]
    assert qs[0].negative_text == "alarm clock, a dog barking"
