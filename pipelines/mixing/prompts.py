"""Text prompts: our own paraphrase templates (extraction and removal) and a label -> phrase map.

Why phrases and not bare labels: separators are queried with language ("a dog barking"), and the demo's CLAP and
judge are trained on the same phrases, so labels from the demo catalogue, ESC-50 and common AudioSet classes map
to a short noun or verb phrase. Unknown labels fall back to the label itself (lower-cased, underscores -> spaces),
so an imported dataset with new classes still gets sensible prompts.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

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


def phrase_for(label: str) -> str:
    """Phrase for a label; falls back to the label itself so unknown classes still read naturally."""
    key = label.strip().lower()
    if key in LABEL_PHRASES:
        return LABEL_PHRASES[key]
    return key.replace("_", " ")


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
