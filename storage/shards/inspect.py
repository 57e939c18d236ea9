"""Summaries and integrity checks of a shard store (the logic behind `stemforge shards inspect|verify`).

`summarize_store` answers "what is in here" from the Parquet index alone (fast, no tar opened); a directory of
foreign WebDataset tars without an index is summarised by reading their `json` members instead. `verify_store`
reads every member of every shard, decodes audio and JSON, and cross-checks keys and offsets with the index, so a
damaged shard is found before a training run trips over it.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from storage.shards.index import ShardIndexError, index_parts, read_index
from storage.shards.reader import (AUDIO_EXTS, ShardReadError, decode_audio_member, iter_raw_samples, list_shards)
from storage.shards.store import MANIFEST_FILE, is_complete


def _histogram(values: list[Any]) -> dict[str, int]:
    counts = Counter(str(v) for v in values if v is not None)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summarize_store(store: str | Path, samples: int = 3) -> dict[str, Any]:
    """Counts, hours, label / recipe / operator histograms, per-shard counts and the first `samples` JSON records."""
    store = Path(store)
    shards = list_shards(store)
    if not shards:
        raise FileNotFoundError(f"{store}: no shards (*.tar) found")
    if index_parts(store):
        table = read_index(store, columns=["key", "shard", "duration_s", "labels", "recipe", "operator", "json"])
        rows = {name: table.column(name).to_pylist() for name in table.column_names}
        source = "index"
    else:
        rows = {"key": [], "shard": [], "duration_s": [], "labels": [], "recipe": [], "operator": [], "json": []}
        for shard in shards:
            for raw in iter_raw_samples(shard, on_error="raise"):
                meta = json.loads(raw["json"]) if "json" in raw else {}
                rows["key"].append(raw["__key__"])
                rows["shard"].append(Path(shard).name)
                rows["duration_s"].append(meta.get("duration_s"))
                rows["labels"].append(meta.get("target_labels") or meta.get("positive_labels") or [])
                rows["recipe"].append(meta.get("recipe"))
                rows["operator"].append(meta.get("operator"))
                rows["json"].append(json.dumps(meta, sort_keys=True) if meta else None)
        source = "tars"
    durations = [d for d in rows["duration_s"] if d is not None]
    per_shard = Counter(rows["shard"])
    manifest_path = store / MANIFEST_FILE
    return {
        "store": str(store.resolve()),
        "source": source,
        "complete": is_complete(store),
        "num_shards": len(shards),
        "num_samples": len(rows["key"]),
        "hours": sum(durations) / 3600.0,
        "mean_duration_s": sum(durations) / len(durations) if durations else None,
        "labels": _histogram([lab for labs in rows["labels"] for lab in (labs or [])]),
        "recipes": _histogram(rows["recipe"]),
        "operators": _histogram(rows["operator"]),
        "shards": {Path(s).name: per_shard.get(Path(s).name, 0) for s in shards},
        "manifest": json.loads(manifest_path.read_text()) if manifest_path.exists() else None,
        "samples": [json.loads(j) for j in rows["json"][:samples] if j],
    }


def verify_store(store: str | Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Read and decode every member; report problems as `{"shard", "member", "problem"}` (empty list = healthy)."""
    store = Path(store)
    shards = list_shards(store)
    if not shards:
        raise FileNotFoundError(f"{store}: no shards (*.tar) found")
    problems: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    tar_keys: dict[str, list[str]] = {}
    members_ok = 0
    samples_ok = 0
    for shard in shards:
        name = Path(shard).name
        keys = tar_keys.setdefault(name, [])
        try:
            for raw in iter_raw_samples(shard, on_error="raise"):
                key = raw["__key__"]
                keys.append(key)
                if key in seen:
                    problems.append({"shard": name, "member": key, "problem": f"duplicate key (also in {seen[key]})"})
                seen.setdefault(key, name)
                sample_ok = True
                for ext, data in raw.items():
                    if ext.startswith("__"):
                        continue
                    member = f"{key}.{ext}"
                    try:
                        if ext.endswith(AUDIO_EXTS):
                            decode_audio_member(shard, member, data)
                        elif ext == "json":
                            json.loads(data)
                        members_ok += 1
                    except ShardReadError as exc:
                        problems.append({"shard": name, "member": member, "problem": exc.reason})
                        sample_ok = False
                    except ValueError as exc:
                        problems.append({"shard": name, "member": member, "problem": f"invalid JSON: {exc}"})
                        sample_ok = False
                samples_ok += sample_ok
        except ShardReadError as exc:
            problems.append({"shard": name, "member": exc.member, "problem": exc.reason})
        if progress:
            progress(1)
    index_checked = False
    if index_parts(store):
        try:
            table = read_index(store, columns=["key", "shard"])
        except (ShardIndexError, OSError, ValueError) as exc:
            problems.append({"shard": "index", "member": "", "problem": f"unreadable index: {exc}"})
        else:
            index_checked = True
            by_shard: dict[str, list[str]] = {}
            for key, shard in zip(table.column("key").to_pylist(), table.column("shard").to_pylist()):
                by_shard.setdefault(shard, []).append(key)
            for name in sorted(set(by_shard) | set(tar_keys)):
                want, have = by_shard.get(name, []), tar_keys.get(name, [])
                if name not in tar_keys:
                    problems.append({"shard": name, "member": "", "problem": "listed in the index but missing"})
                elif name not in by_shard:
                    problems.append({"shard": name, "member": "", "problem": "not in the index (uncommitted shard?)"})
                elif sorted(want) != sorted(have):
                    missing = sorted(set(want) - set(have))
                    problems.append({"shard": name, "member": ", ".join(missing[:5]),
                                     "problem": f"{len(missing)} indexed sample(s) not readable from the tar"})
    return {"store": str(store.resolve()), "num_shards": len(shards), "samples_ok": samples_ok,
            "members_ok": members_ok, "index_checked": index_checked, "problems": problems, "ok": not problems}
