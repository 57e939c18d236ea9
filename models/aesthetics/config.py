"""Config section: Production-complexity scorer. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class PCConfig(Section):
    """Production-complexity scorer."""
