"""Text prompts: our own paraphrase templates (extraction and removal) over the label -> phrase map.

Why phrases and not bare labels: separators are queried with language ("a dog barking"), and the demo's CLAP and
judge are trained on the same phrases, so labels from the demo catalogue, ESC-50 and common AudioSet classes map
to a short noun or verb phrase. The map and `phrase_for` live in `models.labels` (the separator's inference turns
a label-like query into the same phrase, and models cannot import pipelines); they are re-exported here. Labels
are looked up by slug (`Door_Knock` finds "door knock"); unknown labels fall back to their display form
(lower case, `_` / `-` -> spaces), so an imported dataset with new classes still gets sensible prompts.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from models.labels import LABEL_PHRASES, phrase_for

__all__ = ["EXTRACT_TEMPLATES", "REMOVE_TEMPLATES", "LABEL_PHRASES", "phrase_for", "join_phrases", "query_text",
           "make_prompt"]

EXTRACT_TEMPLATES: tuple[str, ...] = (
    "{x}",
    "extract {x}",
    "isolate {x}",
    "separate {x} from the recording",
    "keep only {x}",
    "I only want to hear {x}",
    "give me {x}",
    "pull out {x}",
    "single out {x} from the mix",
    "bring out {x} and drop everything else",
    "let me hear just {x}",
    "get {x} on its own",
    "the sound of {x}",
    "filter out everything except {x}",
    "focus on {x}",
    "return only {x}",
    "capture {x} and nothing else",
    "listen to {x} alone",
    "extract the part where {x} can be heard",
    "separate out {x}",
    "what does {x} sound like without the rest",
    "keep {x}, mute the rest",
    "isolate the audio of {x}",
)

REMOVE_TEMPLATES: tuple[str, ...] = (
    "remove {x}",
    "get rid of {x}",
    "delete {x} from the recording",
    "take out {x}",
    "suppress {x}",
    "mute {x}",
    "eliminate {x}",
    "cut {x} out of the mix",
    "filter out {x}",
    "silence {x}",
    "keep everything except {x}",
    "everything but {x}",
    "erase {x}",
    "strip {x} from the audio",
    "I don't want to hear {x}",
    "clean the recording of {x}",
    "drop {x} and keep the rest",
    "without {x}",
    "remove the sound of {x}",
    "leave out {x}",
    "make {x} disappear",
    "subtract {x} from the mix",
)


def join_phrases(phrases: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c' for prompt text."""
    phrases = [p for p in phrases if p]
    if not phrases:
        return ""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def query_text(labels: Sequence[str]) -> str | None:
    """`positive_text` / `negative_text`: label phrases joined with ', ' (None when there are no labels)."""
    return ", ".join(phrase_for(label) for label in labels) if labels else None


def make_prompt(operator: str, labels: Sequence[str], rng: np.random.Generator) -> str:
    """Operator template x label phrases: e.g. remove + [dog, siren] -> 'get rid of a dog barking and a siren wailing'."""
    if operator not in ("extract", "remove"):
        raise ValueError(f"operator must be 'extract' or 'remove', got {operator!r}")
    templates = EXTRACT_TEMPLATES if operator == "extract" else REMOVE_TEMPLATES
    template = templates[int(rng.integers(len(templates)))]
    return template.format(x=join_phrases([phrase_for(label) for label in labels]))
