"""Config section: CLAP backends (text-audio agreement). (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class ClapConfig(Section):
    """CLAP backends (text-audio agreement)."""
