"""Config section: Synthetic tuple recipes. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class MixingConfig(Section):
    """Synthetic tuple recipes."""
