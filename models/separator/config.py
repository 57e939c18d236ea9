"""Config section: Separator presets and training. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class SeparatorConfig(Section):
    """Separator presets and training."""
