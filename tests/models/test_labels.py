"""models/labels.py: label identity by slug, the label -> phrase map, the AudioSet names, the canonical query rule
and the written forms training draws a query in."""
from __future__ import annotations

import numpy as np
import pytest

from models import labels as L
from pipelines.corpus.classes import BY_NAME


def test_slug_display_and_unique_labels() -> None:
    forms = ["alarm_clock", "Alarm clock", "ALARM CLOCK", "alarm-clock", " Alarm_Clock "]
    assert {L.slug(f) for f in forms} == {"alarm_clock"} and {L.display(f) for f in forms} == {"alarm clock"}
    assert L.same_label("Door-Knock", "door knock") and not L.same_label("door", "door knock")
    assert L.unique_labels(["dog", "Dog", "siren", " dog ", "", "Alarm clock", "alarm_clock"]) == ["dog", "siren", "Alarm clock"]


def test_phrase_for_looks_labels_up_by_slug_and_through_audioset_names() -> None:
    assert L.phrase_for("door knock") == L.phrase_for("Door_Knock") == "knocking on a door"
    assert L.phrase_for("violin") == L.phrase_for("Violin, fiddle") == L.phrase_for("fiddle") == "a violin playing"
    assert L.phrase_for("Male_speech_and_man_speaking") == "a man speaking"  # FSD50K's spelling of the AudioSet name
    assert L.phrase_for("my_new_class") == "my new class"  # unknown: the display form
    from pipelines.mixing.prompts import phrase_for, query_text

    assert phrase_for is L.phrase_for and query_text(["dog", "Siren"]) == "a dog barking, a siren wailing"


def test_audioset_ontology_is_shipped_and_read_once() -> None:
    onto = L.audioset_ontology()
    assert len(onto) == 632 and onto is L.audioset_ontology()
    assert L.audioset_name("violin") == "Violin, fiddle" and L.audioset_name("Alarm_Clock") == "Alarm clock"
    assert L.audioset_class("dog")["id"] == "/m/0bt9lr"
    assert L.audioset_name("door knock") is None


@pytest.mark.parametrize("forms, canonical", [
    (["violin", "Violin", "VIOLIN", "Violin, fiddle", "fiddle", " a violin playing "], "a violin playing"),
    (["alarm_clock", "Alarm clock", "ALARM CLOCK", "Alarm_Clock", "alarm-clock", "ALARM-CLOCK"], "alarm clock"),
    (["drums, bass", "Drums,BASS"], "a drum kit playing a beat, a bass line"),
    (["Xylophone", "xylophone"], "xylophone"),  # one token: label-like even where no phrase is known
])
def test_label_like_queries_have_one_canonical_text(forms: list[str], canonical: str) -> None:
    assert {L.canonical_query(f) for f in forms} == {canonical}


def test_free_text_passes_through() -> None:
    for text in ("a violin playing softly", "dog barking", "the violin in the back", "separate the alarm clock"):
        assert L.canonical_query(f"  {text} ") == text and L.label_of(text) is None
    assert L.canonical_query(None) is None and L.canonical_query("") == ""


def test_query_forms_are_seeded_varied_and_keep_the_held_out_forms_out() -> None:
    draw = lambda seed: [L.query_form("alarm_clock", np.random.default_rng([seed, i])) for i in range(200)]  # noqa: E731
    assert draw(0) == draw(0) and draw(0) != draw(1)
    seen = set(draw(0))
    allowed = L.training_forms("alarm_clock")
    assert seen <= allowed and len(seen) >= 12
    assert {"alarm_clock", "Alarm clock", "ALARM CLOCK", "Alarm_Clock", "alarm clock", "the sound of alarm clock"} <= seen
    # the stored phrases replace phrase_for when given; multi-label sides join one form per label
    rng = np.random.default_rng(3)
    assert "a loud beeping" in {L.query_form("alarm_clock", rng, ["a loud beeping"]) for _ in range(60)}
    assert L.held_out_forms("alarm_clock")["held_out_case_0"] == "ALARM-CLOCK"
    assert L.query_form_text([], rng) is None and L.query_form_text(["dog", "siren"], rng).count(", ") >= 1
    for label in list(BY_NAME) + ["alarm_clock", "violin"]:
        held = L.held_out_forms(label)
        assert len(L.HELD_OUT_TEMPLATES) <= len(held) <= len(L.HELD_OUT_TEMPLATES) + len(L.HELD_OUT_CASES)
        assert not set(held.values()) & L.training_forms(label), label
        # the held-out templates are free text for the canonicaliser: they measure the trained separator itself
        assert all(L.canonical_query(held[f"held_out_template_{i}"]) == held[f"held_out_template_{i}"]
                   for i in range(len(L.HELD_OUT_TEMPLATES)))


def test_every_phrase_is_its_own_canonical_text() -> None:
    """The stored texts of the engine's data (label phrases, alone or joined by query_text) reach the encoder
    unchanged, so the canonical rule changes nothing for queries the engine itself writes."""
    from pipelines.mixing.prompts import query_text

    phrases = list(L.LABEL_PHRASES.values()) + [c.phrase for c in BY_NAME.values()]
    assert [L.canonical_query(p) for p in phrases] == phrases
    labels = list(BY_NAME)
    for i in range(len(labels) - 2):
        text = query_text(labels[i:i + 3])
        assert L.canonical_query(text) == text
