"""One label normaliser for every entry point (import, mixing, training queries, separate, evaluate, pseudo-labels),
the label -> phrase map, and the written forms a query for a label comes in.

Why: users write `alarm_clock`, `Alarm clock`, `alarm-clock` or `ALARM CLOCK` for the same class; files and CSVs
carry any of those. Comparing or encoding labels in whatever form they arrived made a bare-label query miss the
class the separator was trained on (the presence gate closed for `violin` where `a violin playing` worked). So:

- Label identity: every label is keyed by its slug (lower case, words joined by `_`) and shown by its display form
  (words joined by spaces). `same_label` compares two written forms.
- Label phrase: `phrase_for(label)` looks the slug up in `LABEL_PHRASES` (directly, or through the AudioSet
  ontology's display names: `Violin, fiddle` -> `violin` -> "a violin playing"); unknown labels read as their
  display form.
- Canonical query (`canonical_query`, applied by `models.separator.infer.Separator` to every text before it is
  encoded, so `separate`, `evaluate`, the run's evaluation and pseudo-labelling all see the same thing): a
  *label-like* query becomes the phrase of its label; any other text is free text and passes through (stripped).
  Label-like means: its slug is a known label (a `LABEL_PHRASES` key, an AudioSet class name in any of its written
  forms, or one comma-separated part of one such as `fiddle`), or it is a single token of letters and digits
  joined by `_` / `-` (`Xylophone`, `my_class`, `ALARM-CLOCK`), or a comma-separated list of such labels (each
  becomes its phrase, joined with ", " as `query_text` joins them). So `violin`, `Violin`, `VIOLIN`,
  `Violin, fiddle` and `a violin playing` are one query; `a violin playing softly` is another.
- Training query forms (`query_form`): the separator is trained on each label in several written forms drawn per
  sample from a seeded generator (the stored phrase, the bare label in its case/separator variants, paraphrase
  templates, the AudioSet display name), so a query the canonicaliser does not recognise (a template it was never
  shown, a label inside free text) still finds the class. `HELD_OUT_TEMPLATES` and `HELD_OUT_CASES` are never drawn
  in training: they are the measurement's unseen forms (bench/bench_queries.py).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

_SEP = re.compile(r"[\s_\-]+")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[_\-][A-Za-z0-9]+)*")

ONTOLOGY_PATH = Path(__file__).resolve().parent / "data" / "audioset_ontology.json"


def slug(label: str) -> str:
    """Canonical key of a label: `"Alarm clock"`, `"alarm-clock"`, `"ALARM_CLOCK"` -> `"alarm_clock"`."""
    return _SEP.sub("_", str(label).strip().lower()).strip("_")


def display(label: str) -> str:
    """Human form of a label: `"alarm_clock"` -> `"alarm clock"` (case kept from the slug: lower)."""
    return slug(label).replace("_", " ")


def same_label(a: str, b: str) -> bool:
    """Whether two written forms name the same label."""
    return slug(a) == slug(b)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels without repeats of the same label in another written form (order and first form kept; blanks dropped)."""
    seen: dict[str, str] = {}
    for label in labels:
        label = str(label).strip()
        if slug(label) and slug(label) not in seen:
            seen[slug(label)] = label
    return list(seen.values())


# label (lower case) -> phrase. Demo catalogue first, then ESC-50, then frequent AudioSet classes.
LABEL_PHRASES: dict[str, str] = {
    # demo catalogue (pipelines/corpus/classes.py)
    "male speech": "a man speaking",
    "female speech": "a woman speaking",
    "whistling": "someone whistling a tune",
    "piano": "piano playing",
    "violin": "a violin playing",
    "flute": "a flute playing",
    "drums": "a drum kit playing a beat",
    "bass guitar": "a bass guitar playing",
    "dog": "a dog barking",
    "siren": "a siren wailing",
    "bird": "a bird chirping",
    "clock": "a clock ticking",
    "door knock": "knocking on a door",
    "engine": "an engine idling",
    "rain": "rain falling",
    "telephone": "a telephone ringing",
    # ESC-50
    "rooster": "a rooster crowing",
    "pig": "a pig oinking",
    "cow": "a cow mooing",
    "frog": "a frog croaking",
    "cat": "a cat meowing",
    "hen": "a hen clucking",
    "insects": "insects buzzing",
    "sheep": "a sheep bleating",
    "crow": "a crow cawing",
    "sea waves": "sea waves crashing",
    "crackling fire": "a fire crackling",
    "crickets": "crickets chirping",
    "chirping birds": "birds chirping",
    "water drops": "water dripping",
    "wind": "wind blowing",
    "pouring water": "water being poured",
    "toilet flush": "a toilet flushing",
    "thunderstorm": "thunder rumbling",
    "crying baby": "a baby crying",
    "sneezing": "someone sneezing",
    "clapping": "people clapping",
    "breathing": "someone breathing",
    "coughing": "someone coughing",
    "footsteps": "footsteps",
    "laughing": "someone laughing",
    "brushing teeth": "someone brushing teeth",
    "snoring": "someone snoring",
    "drinking sipping": "someone sipping a drink",
    "door wood knock": "knocking on a wooden door",
    "mouse click": "a computer mouse clicking",
    "keyboard typing": "typing on a keyboard",
    "door wood creaks": "a wooden door creaking",
    "can opening": "a can being opened",
    "washing machine": "a washing machine running",
    "vacuum cleaner": "a vacuum cleaner running",
    "clock alarm": "an alarm clock ringing",
    "clock tick": "a clock ticking",
    "glass breaking": "glass breaking",
    "helicopter": "a helicopter flying",
    "chainsaw": "a chainsaw running",
    "car horn": "a car horn honking",
    "train": "a train passing",
    "church bells": "church bells ringing",
    "airplane": "an airplane flying overhead",
    "fireworks": "fireworks exploding",
    "hand saw": "someone sawing wood",
    # frequent AudioSet classes
    "speech": "a person speaking",
    "male speech, man speaking": "a man speaking",
    "female speech, woman speaking": "a woman speaking",
    "child speech, kid speaking": "a child speaking",
    "conversation": "people talking",
    "singing": "someone singing",
    "music": "music playing",
    "guitar": "a guitar playing",
    "electric guitar": "an electric guitar playing",
    "acoustic guitar": "an acoustic guitar playing",
    "drum": "a drum being played",
    "drum kit": "a drum kit playing a beat",
    "bass drum": "a bass drum thumping",
    "snare drum": "a snare drum",
    "cymbal": "a cymbal crashing",
    "trumpet": "a trumpet playing",
    "saxophone": "a saxophone playing",
    "cello": "a cello playing",
    "organ": "an organ playing",
    "synthesizer": "a synthesizer playing",
    "harmonica": "a harmonica playing",
    "accordion": "an accordion playing",
    "vocals": "someone singing",
    "bass": "a bass line",
    "other": "other instruments",
    "animal": "an animal making noise",
    "dog bark": "a dog barking",
    "bark": "a dog barking",
    "howl": "an animal howling",
    "bird vocalization, bird call, bird song": "a bird singing",
    "bird song": "a bird singing",
    "horse": "a horse neighing",
    "duck": "a duck quacking",
    "vehicle": "a vehicle passing",
    "car": "a car driving by",
    "motorcycle": "a motorcycle revving",
    "truck": "a truck rumbling",
    "bus": "a bus passing",
    "aircraft": "an aircraft flying",
    "emergency vehicle": "an emergency vehicle siren",
    "ambulance (siren)": "an ambulance siren",
    "police car (siren)": "a police siren",
    "alarm": "an alarm going off",
    "bell": "a bell ringing",
    "doorbell": "a doorbell ringing",
    "telephone bell ringing": "a telephone ringing",
    "ringtone": "a phone ringtone",
    "knock": "knocking",
    "door": "a door opening and closing",
    "applause": "people applauding",
    "cheering": "a crowd cheering",
    "crowd": "a crowd murmuring",
    "laughter": "people laughing",
    "baby cry, infant cry": "a baby crying",
    "cough": "someone coughing",
    "sneeze": "someone sneezing",
    "walk, footsteps": "footsteps",
    "water": "water flowing",
    "stream": "a stream flowing",
    "ocean": "ocean waves",
    "waves, surf": "waves crashing",
    "thunder": "thunder rumbling",
    "fire": "a fire crackling",
    "explosion": "an explosion",
    "gunshot, gunfire": "gunshots",
    "hammer": "hammering",
    "power tool": "a power tool whirring",
    "drill": "a drill whirring",
    "typing": "someone typing",
    "writing": "someone writing",
    "dishes, pots, and pans": "dishes clattering",
    "frying (food)": "food frying",
    "microwave oven": "a microwave humming",
    "tick-tock": "a clock ticking",
    "wind noise (microphone)": "wind noise on the microphone",
    "noise": "background noise",
    "hum": "a low hum",
    "buzz": "a buzzing sound",
    "silence": "silence",
}




@lru_cache(maxsize=1)
def _phrase_index() -> dict[str, str]:
    return {slug(k): v for k, v in LABEL_PHRASES.items()}


@lru_cache(maxsize=1)
def audioset_ontology() -> tuple[dict[str, Any], ...]:
    """The AudioSet ontology shipped as package data (models/data/audioset_ontology.json, CC BY-SA 4.0), read once."""
    try:
        data = json.loads(ONTOLOGY_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{ONTOLOGY_PATH}: the shipped AudioSet ontology cannot be read ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in data):
        raise RuntimeError(f"{ONTOLOGY_PATH}: not an AudioSet ontology (a list of classes with id and name)")
    return tuple(data)


def _name_forms(name: str) -> list[str]:
    """Slugs a class name is written as: `Male speech, man speaking` -> itself, FSD50K's `..._and_man_speaking`,
    and without the comma."""
    return list(dict.fromkeys([slug(name), slug(name.replace(",", " and")), slug(name.replace(",", " "))]))


@lru_cache(maxsize=1)
def _audioset_index() -> dict[str, dict[str, Any]]:
    """slug of any written form of an AudioSet class name -> the class; whole names first, then comma parts (a part
    that is some class's whole name, or an earlier class's part, keeps that meaning)."""
    index: dict[str, dict[str, Any]] = {}
    classes = audioset_ontology()
    for c in classes:
        for form in _name_forms(c["name"]):
            index.setdefault(form, c)
    for c in classes:
        for part in str(c["name"]).split(","):
            if slug(part):
                index.setdefault(slug(part), c)
    return index


def audioset_class(label: str) -> dict[str, Any] | None:
    """The AudioSet class (`id` = MID, `name` = display name, ...) a label names, or None."""
    return _audioset_index().get(slug(label))


def audioset_name(label: str) -> str | None:
    """The AudioSet display name of a label where the ontology knows it: `violin` -> `Violin, fiddle`."""
    c = audioset_class(label)
    return None if c is None else str(c["name"])


def label_phrase(label: str) -> str | None:
    """The phrase of a known label (directly or through its AudioSet class's written forms), None if unknown."""
    index = _phrase_index()
    s = slug(label)
    if s in index:
        return index[s]
    c = audioset_class(label)
    if c is not None:
        for form in _name_forms(c["name"]) + [slug(p) for p in str(c["name"]).split(",")]:
            if form in index:
                return index[form]
    return None


def phrase_for(label: str) -> str:
    """Phrase for a label; falls back to the label's display form so unknown classes still read naturally."""
    return label_phrase(label) or display(label)


def label_of(text: str) -> str | None:
    """The slug of the label a query names when the query is label-like (module docstring), else None."""
    t = str(text).strip()
    s = slug(t)
    if not s:
        return None
    if s in _phrase_index() or s in _audioset_index() or _TOKEN.fullmatch(t):
        return s
    return None


def canonical_query(text: str | None) -> str | None:
    """The text the encoder sees for a query: a label-like query becomes its label's phrase, a comma-separated list
    of labels the phrases joined by ", ", anything else passes through stripped (None / empty stay as they are)."""
    if not text:
        return text
    t = str(text).strip()
    label = label_of(t)
    if label is not None:
        return phrase_for(label)
    parts = [p.strip() for p in t.split(",")]
    if len(parts) > 1 and all(parts):
        labels = [label_of(p) for p in parts]
        if all(lab is not None for lab in labels):
            return ", ".join(phrase_for(lab) for lab in labels)  # type: ignore[arg-type]
    return t


# -- written forms of a query for a label (training draws them; the held-out ones only measure) --------------------

LABEL_CASES: tuple[Callable[[str], str], ...] = (
    lambda s: s,                                               # alarm_clock
    lambda s: s.replace("_", " "),                             # alarm clock
    lambda s: s.replace("_", " ").capitalize(),                # Alarm clock
    lambda s: s.replace("_", " ").upper(),                     # ALARM CLOCK
    lambda s: "_".join(w.capitalize() for w in s.split("_")),  # Alarm_Clock
    lambda s: s.replace("_", "-"),                             # alarm-clock
)
HELD_OUT_CASES: tuple[Callable[[str], str], ...] = (
    lambda s: s.replace("_", "-").upper(),                     # ALARM-CLOCK
    lambda s: s.replace("_", " ").title(),                     # Alarm Clock
)
TRAIN_TEMPLATES: tuple[str, ...] = (
    "the sound of {x}",
    "{x} sounds",
    "isolate the {x}",
    "extract the {x}",
    "just the {x}",
    "{x} only",
    "some {x}",
    "a recording of {x}",
    "keep the {x}",
    "the {x} part",
    "{x} in the mix",
    "a {x} sound",
)
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "I want to hear the {x}",
    "{x} please",
    "can you pull out the {x}",
    "give me only the {x} track",
    "separate the {x} from everything else",
    "where is the {x}",
)
# kind -> weight of the training draw; "audioset" falls back to "label" where the ontology does not know the label
FORM_WEIGHTS: dict[str, float] = {"phrase": 0.35, "label": 0.3, "template": 0.2, "audioset": 0.15}


def query_form(label: str, rng: np.random.Generator, phrases: Sequence[str] | None = None) -> str:
    """One training form of a query for `label`, drawn from `rng` (a fixed number of draws: two integers and a float,
    whatever the kind, so the generator's later draws do not depend on the label). `phrases`: the texts the data asks
    for the label in (default: its `phrase_for`)."""
    s = slug(label)
    kinds = list(FORM_WEIGHTS)
    p = np.array([FORM_WEIGHTS[k] for k in kinds])
    kind = kinds[int(np.searchsorted(np.cumsum(p / p.sum()), rng.random(), side="right").clip(0, len(kinds) - 1))]
    a, b = (int(x) for x in rng.integers(0, 1 << 30, size=2))
    if kind == "audioset":
        name = audioset_name(s)
        if name is not None:
            return name
        kind = "label"
    if kind == "phrase":
        forms = list(phrases or []) or [phrase_for(s)]
        return forms[a % len(forms)]
    if kind == "template":
        return TRAIN_TEMPLATES[a % len(TRAIN_TEMPLATES)].format(x=display(s))
    return LABEL_CASES[b % len(LABEL_CASES)](s)


def query_form_text(labels: Sequence[str], rng: np.random.Generator,
                    phrases: dict[str, list[str]] | None = None) -> str | None:
    """A query side naming `labels`: one drawn form per label, joined with ", " (None without labels)."""
    labels = [str(x) for x in labels if x]
    if not labels:
        return None
    return ", ".join(query_form(lab, rng, (phrases or {}).get(lab)) for lab in labels)


def training_forms(label: str, phrases: Sequence[str] | None = None) -> set[str]:
    """Every text `query_form(label, ..., phrases)` can return (what training may ask for the label in)."""
    s = slug(label)
    out = set(phrases or []) or {phrase_for(s)}
    out |= {t.format(x=display(s)) for t in TRAIN_TEMPLATES} | {f(s) for f in LABEL_CASES}
    name = audioset_name(s)
    return out | ({name} if name else set())


def held_out_forms(label: str) -> dict[str, str]:
    """The forms of a query for `label` that training never draws, by name (`held_out_template_0`, ...,
    `held_out_case_0`, ...): the measurement's unseen forms. A case form that coincides with a training form (a
    one-word label has no separator to vary) is left out."""
    s = slug(label)
    out = {f"held_out_template_{i}": t.format(x=display(s)) for i, t in enumerate(HELD_OUT_TEMPLATES)}
    trained = training_forms(s)
    out.update({f"held_out_case_{i}": f(s) for i, f in enumerate(HELD_OUT_CASES) if f(s) not in trained})
    return out
