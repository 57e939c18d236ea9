"""SAM Audio style text-prompted pseudo-labels (§4.1.3): each event phrase of a free-text description prompts a
target and a residual. No negatives: the phrases come from captions, not from an exclusive label set.

`split_caption` is the rule-based stand-in for OpenSep's LLM parser: a caption like
"Children yelling. A dog barking; rain" becomes one phrase per sentence/clause.
"""
from __future__ import annotations

import re
from typing import Sequence

from pipelines.pseudolabel.decompose import Query

_SPLIT = re.compile(r"[.;\n]+|,\s*(?:and\s+|while\s+)?|\s+(?:and|while|with|over)\s+", re.IGNORECASE)


def split_caption(caption: str) -> list[str]:
    """Single-event phrases of a caption, lower-cased, order kept, duplicates removed."""
    phrases: list[str] = []
    for part in _SPLIT.split(caption or ""):
        p = part.strip().strip(",").strip().lower()
        if p and p not in phrases:
            phrases.append(p)
    return phrases


def prompt_queries(scene_id: str, phrases: Sequence[str]) -> list[Query]:
    """One positive-only query per phrase; `label` is the phrase itself."""
    unique = []
    for p in phrases:
        p = p.strip()
        if p and p not in unique:
            unique.append(p)
    return [
        Query(scene_id=scene_id, index=i, label=p, positive_text=p, negative_text=None,
              positive_labels=[p], negative_labels=[], scene_labels=list(unique))
        for i, p in enumerate(unique)
    ]
