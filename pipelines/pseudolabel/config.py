"""Config section: Pseudo-labeling of natural scenes. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class PseudoLabelConfig(Section):
    """Pseudo-labeling of natural scenes."""
