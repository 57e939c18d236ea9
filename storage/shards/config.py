"""Config section `shards`: how samples are cut into WebDataset tars and how they are read back.

Why both a count and a byte limit: the count fixes the resumption unit (shard j always holds samples
[j*max_count, (j+1)*max_count) unless the byte limit cuts it first), the byte limit keeps tars a sane size for object
stores and streaming readers when samples are unexpectedly long.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage.configio import Section


class ShardConfig(Section):
    """WebDataset shard store limits and reader defaults."""

    max_count: int = Field(64, ge=1, description="Samples per shard group (the deterministic resumption unit).")
    max_bytes: int = Field(256 * 1024 * 1024, ge=4096, description="Cut a shard before it would exceed this many bytes.")
    prefix: str = Field("shard", pattern=r"^[A-Za-z0-9_-]+$", description="Shard file name prefix: <prefix>-<NNNNNN>.tar.")
    mtime: int = Field(0, ge=0, description="Fixed mtime in every tar header so equal samples give byte-identical tars.")
    fsync: bool = Field(True, description="fsync each shard before the rename that publishes it.")
    shuffle_buffer: int = Field(256, ge=0, description="Reader: sample shuffle buffer (0 = no sample shuffling).")
    on_error: Literal["raise", "skip"] = Field("raise", description="Reader: what to do with a corrupt shard or member.")
