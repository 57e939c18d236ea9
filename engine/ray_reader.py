"""Build a `ray.data.Dataset` from shard paths, for the Ray execution backend of `engine`.

It lives in `engine/` because Ray may be imported only there (`storage` stays Ray-free); ray is imported inside
`read_shards_ray`, so importing this module stays cheap for in-process callers. Each shard is one read task (`from_items` + `flat_map`), decoded with the same code as the torch reader, so both
paths report corrupt shards and members identically. Rows are flat: `__key__`, `__url__`, `mix`, `target`,
`residual` (float32 arrays), `sample_rate`, `json` (the JSON text; `json.loads` it where needed, since Arrow columns
need one schema while sample metadata grows per stage).
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

from storage.shards.reader import OnError, ShardReadError, decode_sample, iter_raw_samples, resolve_urls


def _rows_of_shard(item: dict[str, Any], on_error: OnError, decode: bool) -> Iterator[dict[str, Any]]:
    import logging

    log = logging.getLogger("stemforge.shards")
    for raw in iter_raw_samples(item["url"], on_error):
        if not decode:
            yield raw
            continue
        try:
            sample = decode_sample(raw)
        except ShardReadError as exc:
            if on_error != "skip":
                raise
            log.warning("skipping sample: %s", exc)
            continue
        if "json" in sample:
            sample["json"] = json.dumps(sample["json"], sort_keys=True)
        yield sample


def read_shards_ray(urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, on_error: OnError = "raise",
                    decode: bool = True, shuffle_shards: bool = False, seed: int = 0) -> Any:
    """A lazily executed `ray.data.Dataset` with one row per sample of the given store dir / shard paths."""
    import random

    import ray.data  # local import: ray is optional at import time of storage

    shards = resolve_urls(urls)
    if shuffle_shards:
        random.Random(seed).shuffle(shards)
    items = [{"url": s} for s in shards]
    return ray.data.from_items(items, override_num_blocks=len(items)).flat_map(
        _rows_of_shard, fn_kwargs={"on_error": on_error, "decode": decode})
