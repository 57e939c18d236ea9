"""ClearSep decomposition queries (§3.3, App. A.2): one query per event label, the other labels as negatives.

Labels are made mutually exclusive first: duplicates are removed (compared by `models.labels.slug`, so `Dog` and
`dog` are one label; the first written form is kept) and, when an ontology is given, a parent label whose child is
also present is dropped (a scene tagged "music" and "piano" is queried for "piano" only). Texts are the label
phrases (`phrase_for`, looked up by slug): the canonical text the separator encodes a label-like query as, so a
pseudo-label asks exactly what `stemforge separate` asks for the same label in any written form.
A scene with m exclusive labels yields m queries and so m tracks, each with its own residual.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from models.labels import unique_labels
from pipelines.mixing.prompts import phrase_for, query_text


@dataclass(frozen=True)
class Query:
    """One text query on one scene; `negative_text` is None for positive-only queries."""

    scene_id: str
    index: int
    label: str
    positive_text: str
    negative_text: str | None
    positive_labels: list[str] = field(default_factory=list)
    negative_labels: list[str] = field(default_factory=list)
    scene_labels: list[str] = field(default_factory=list)

    @property
    def candidate_id(self) -> str:
        return f"{self.scene_id}-q{self.index:02d}"


def exclusive_labels(labels: Sequence[str], is_ancestor: Callable[[str, str], bool] | None = None) -> list[str]:
    """Order-preserving de-duplication by slug, then drop every label that is an ancestor of another present label."""
    seen = unique_labels(labels)
    if is_ancestor is None:
        return seen
    return [a for a in seen if not any(a != b and is_ancestor(a, b) for b in seen)]


def label_queries(scene_id: str, labels: Sequence[str], is_ancestor: Callable[[str, str], bool] | None = None) -> list[Query]:
    """Queries for a labelled scene: positive Ti, negatives = every other exclusive label."""
    exclusive = exclusive_labels(labels, is_ancestor)
    queries = []
    for i, label in enumerate(exclusive):
        others = [o for o in exclusive if o != label]
        queries.append(Query(
            scene_id=scene_id, index=i, label=label,
            positive_text=phrase_for(label), negative_text=query_text(others),
            positive_labels=[label], negative_labels=others, scene_labels=list(exclusive),
        ))
    return queries
