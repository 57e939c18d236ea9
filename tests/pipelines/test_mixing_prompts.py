"""Prompt templates and the label -> phrase map."""
from __future__ import annotations

import numpy as np

from pipelines.mixing.prompts import (EXTRACT_TEMPLATES, LABEL_PHRASES, REMOVE_TEMPLATES, join_phrases, make_prompt,
                                      phrase_for, query_text)

DEMO = ["male speech", "female speech", "whistling", "piano", "violin", "flute", "drums", "bass guitar", "dog",
        "siren", "bird", "clock", "door knock", "engine", "rain", "telephone"]


def test_template_counts_and_placeholders() -> None:
    assert len(set(EXTRACT_TEMPLATES)) >= 20 and len(set(REMOVE_TEMPLATES)) >= 20
    assert not set(EXTRACT_TEMPLATES) & set(REMOVE_TEMPLATES)
    for template in EXTRACT_TEMPLATES + REMOVE_TEMPLATES:
        assert template.count("{x}") == 1


def test_phrases_cover_demo_and_fall_back() -> None:
    for label in DEMO:
        assert label in LABEL_PHRASES and LABEL_PHRASES[label] != label
    assert phrase_for("Dog") == "a dog barking"
    assert phrase_for("crackling fire") == "a fire crackling"
    assert phrase_for("Theremin_solo") == "theremin solo"
    assert len(LABEL_PHRASES) >= 100


def test_prompt_composition() -> None:
    rng = np.random.default_rng(0)
    seen = {make_prompt("remove", ["dog", "siren"], rng) for _ in range(200)}
    assert len(seen) >= 15
    assert all("a dog barking and a siren wailing" in p for p in seen)
    assert join_phrases(["a", "b", "c"]) == "a, b and c"
    assert query_text(["dog", "rain"]) == "a dog barking, rain falling"
    assert query_text([]) is None
