"""Config section: The embedded demo corpus and dataset import. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class CorpusConfig(Section):
    """The embedded demo corpus and dataset import."""
