"""What the judge reads: the target's text and, for a judge trained to read them, the other sounds in the mixture.

Why the other sounds: how true a separated track can be depends on how crowded its mixture is, and nothing in the
target's text says so. On the demo's natural candidates (filter 0 of `runs/demo`, 957 tracks) true track SDR falls
from 6.3 dB in two-event scenes to 3.0 and 1.2 dB in three- and four-event ones, while a judge calibrated on the
target's text alone rated them 3.32 / 3.32 / 3.23 on average; the scene's other labels are known wherever the judge
scores (the pseudo-labeller's query negatives, a synthetic tuple's residual labels, a stems folder's other stems).
Calibrating and scoring with them lifted the judge's Pearson with true track SDR from 0.46 to 0.56 on the same
candidates, and to 0.61 with the engine's longer calibration (docs/perf/judge_pc.md).

A judge checkpoint says which form it was trained on (`meta["text_form"]`, one of TEXT_FORMS; absent = "target"):
the run's proxy-trained judge and human-rated judges read the target alone, a separator-calibrated judge
(`models.judge.separator_ratings.calibrate_judge`) reads "target without others". The scorer composes the text from
what its caller passes, so callers hand over the other labels wherever they know them and never need to know the form.
"""
from __future__ import annotations

from typing import Iterable, Sequence

TEXT_FORMS = ("target", "target+others")
WITH_OTHERS = "target+others"


def clean_labels(labels: Iterable[object] | None) -> list[str]:
    """Label names as words (`bass_guitar` -> `bass guitar`), empty ones dropped, each once, order kept."""
    out = (str(x).replace("_", " ").strip() for x in (labels or []) if x is not None)
    return list(dict.fromkeys(x for x in out if x))


def others_in(scene_labels: Iterable[object] | None, positive_labels: Iterable[object] | None) -> list[str]:
    """A candidate's other sounds: its scene's labels minus the ones it was asked for (matched by slug, so
    `alarm clock` and `alarm_clock` are one label). The filter's scoring and the pseudo-labeller's rerank both use it."""
    from models.labels import slug

    asked = {slug(str(x)) for x in (positive_labels if positive_labels is not None else [])}
    return [str(x) for x in (scene_labels if scene_labels is not None else []) if slug(str(x)) not in asked]


def judge_text(target: str, others: Iterable[object] | None = ()) -> str:
    """`"<target> without <other>, <other>"`; the target text alone when no other sound is known."""
    rest = clean_labels(others)
    return f"{target} without {', '.join(rest)}" if rest else target


def compose_texts(form: str, texts: Sequence[str], others: Sequence[Iterable[object] | None] | None) -> list[str]:
    """The texts a judge of `form` reads: unchanged for "target" (or when no other labels are given)."""
    if form not in TEXT_FORMS:
        raise ValueError(f"judge text form {form!r} is not one of {TEXT_FORMS}")
    if form == "target" or others is None:
        return list(texts)
    if len(others) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(others)} other-label lists")
    return [judge_text(t, o) for t, o in zip(texts, others)]
