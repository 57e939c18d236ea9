"""Config section: SAJ-style judge. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class JudgeConfig(Section):
    """SAJ-style judge."""
