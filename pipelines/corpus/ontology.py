"""The AudioSet ontology: names of label ids and the parent/child hierarchy.

Why: AudioSet and FSD50K label a clip with a class *and its ancestors* ("Bark", "Dog", "Domestic animals",
"Animal"). ClearSep (App. A.2) removes every parent label that has a child label in the same clip so that a
clip's labels are mutually exclusive events; otherwise a one-dog clip would look like a four-event scene and
a query "Animal" would overlap the query "Dog".

The official ontology ships as package data (`models/data/audioset_ontology.json`, CC BY-SA 4.0, licence notice in
`models/data/README.md`) and is the default of the `fsd50k` and `audioset` layouts, so parent labels are removed
even when a dataset copy comes without its `ontology.json`.

Label slugs: AudioSet names carry commas ("Domestic animals, pets"); FSD50K writes the same class as
`Domestic_animals_and_pets`. `label_slug` follows FSD50K's convention (", " -> " and ", other punctuation dropped)
and then `models.labels.slug`, so both datasets key a class identically (`domestic_animals_and_pets`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

from models.labels import slug

_PUNCT = re.compile(r"[^\w\s\-]")


def label_slug(name: str) -> str:
    """Slug of a dataset or AudioSet label name: "Domestic animals, pets" -> "domestic_animals_and_pets"."""
    return slug(_PUNCT.sub("", str(name).replace(",", " and ")))


def packaged_ontology_path() -> Path:
    """The AudioSet ontology shipped with stemforge (package data of `models`)."""
    return Path(str(resources.files("models") / "data" / "audioset_ontology.json"))


@lru_cache(maxsize=1)
def packaged_ontology() -> "Ontology":
    """The shipped ontology, parsed once per process."""
    return Ontology.load(packaged_ontology_path())


class OntologyError(ValueError):
    """ontology.json is missing or malformed (message names the file)."""


@dataclass
class Ontology:
    names: dict[str, str]  # id -> display name
    children: dict[str, list[str]]
    source: str = "<memory>"
    _parents: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _ancestor_cache: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _by_slug: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for parent, kids in self.children.items():
            for kid in kids:
                self._parents.setdefault(kid, set()).add(parent)

    @classmethod
    def load(cls, path: str | Path) -> "Ontology":
        """Read the AudioSet `ontology.json`: a list of objects with `id`, `name` and `child_ids`."""
        path = Path(path)
        if not path.is_file():
            raise OntologyError(f"{path}: ontology file does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OntologyError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, list):
            raise OntologyError(f"{path}: expected a JSON list of ontology entries")
        names: dict[str, str] = {}
        children: dict[str, list[str]] = {}
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
                raise OntologyError(f"{path}: entry [{i}] needs 'id' and 'name'")
            kids = entry.get("child_ids", [])
            if not isinstance(kids, list):
                raise OntologyError(f"{path}: entry [{i}] ({entry['id']}): 'child_ids' must be a list")
            names[str(entry["id"])] = str(entry["name"])
            children[str(entry["id"])] = [str(k) for k in kids]
        return cls(names=names, children=children, source=str(path))

    def name(self, label_id: str) -> str | None:
        return self.names.get(label_id)

    def mid_of(self, label: str) -> str | None:
        """The id whose name has the same slug as `label` ("dog", "Dog" -> "/m/0bt9lr"); None when no class matches."""
        if not self._by_slug:
            for mid, name in self.names.items():
                self._by_slug.setdefault(label_slug(name), mid)
        return self._by_slug.get(label_slug(label))

    def ancestors(self, label_id: str) -> frozenset[str]:
        """All ids above `label_id` (transitively); cycles in a malformed ontology are tolerated."""
        cached = self._ancestor_cache.get(label_id)
        if cached is not None:
            return cached
        seen: set[str] = set()
        stack = list(self._parents.get(label_id, ()))
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack.extend(self._parents.get(node, ()))
        seen.discard(label_id)
        result = frozenset(seen)
        self._ancestor_cache[label_id] = result
        return result

    def remove_ancestors(self, label_ids: Sequence[str]) -> list[str]:
        """Drop duplicates and every id that is an ancestor of another id of the same clip; order is kept."""
        unique = list(dict.fromkeys(label_ids))
        covered: set[str] = set()
        for label_id in unique:
            covered |= self.ancestors(label_id)
        return [label_id for label_id in unique if label_id not in covered]
