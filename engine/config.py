"""Config section: how stages are executed (in-process now, Ray later)."""
from __future__ import annotations

from storage.configio import Section


class EngineConfig(Section):
    """Execution backend selection."""
