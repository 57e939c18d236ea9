"""Config section: WebDataset shard store limits. (placeholder to be filled by the owning module)."""
from __future__ import annotations

from storage.configio import Section


class ShardConfig(Section):
    """WebDataset shard store limits."""
