"""Config section: Candidate filters and tiers. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class FilterConfig(Section):
    """Candidate filters and tiers."""
