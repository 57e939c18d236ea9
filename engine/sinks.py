"""Sinks: where each task's output is committed, inside the worker that computed it.

Layout of a `TableSink(root)` (and `CandidatesSink`, which adds the kept tracks' audio):
```
root/table/part-<key>.parquet        the task's rows, every non-audio column (absent when the task has no rows)
root/kept_audio/part-<key>.parquet   CandidatesSink: candidate_id, sample_rate, target_flac (24-bit FLAC bytes) of
                                     every kept candidate: what the tier step needs besides the scene file
root/quarantine/part-<key>.parquet   stage, key, row_id, error_kind, message of every row that raised
root/_commits/<key>.json             the task's record (rows, quarantined, counters, per-stage stats); written last
```
Every file is written atomically (temp + fsync + rename, storage/atomic.py) under a name fixed by the task key, and
the commit record comes last: a worker that dies mid-task leaves no record, the retry rewrites the same names with
the same bytes, and a key is either committed once or not at all. `committed()` lists the records, so a re-run
(under either executor) schedules only the rest.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.stage import Batch, batch_len, select_rows
from storage.atomic import atomic_path, atomic_write_text

QUARANTINE_COLUMNS = ("stage", "key", "row_id", "error_kind", "message")


class Sink(ABC):
    """Commits one task's output atomically and idempotently; must be picklable (it travels to workers)."""

    @abstractmethod
    def prepare(self) -> None:
        """Driver side, before scheduling: create directories."""

    @abstractmethod
    def committed(self) -> set[str]:
        """Keys whose output is complete."""

    @abstractmethod
    def commits(self) -> list[dict[str, Any]]:
        """Every committed task's record (small), sorted by key."""

    @abstractmethod
    def write(self, key: str, batch: Batch, quarantine: list[dict[str, Any]], record: dict[str, Any]) -> None:
        """Worker side: write the task's output, then its commit record."""


def _write_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


@dataclass
class TableSink(Sink):
    """A Parquet part per task key of every non-audio column (see the module docstring for the layout)."""

    root: str

    @property
    def table_dir(self) -> Path:
        return Path(self.root) / "table"

    @property
    def quarantine_dir(self) -> Path:
        return Path(self.root) / "quarantine"

    @property
    def commit_dir(self) -> Path:
        return Path(self.root) / "_commits"

    def prepare(self) -> None:
        for d in (self.table_dir, self.quarantine_dir, self.commit_dir):
            d.mkdir(parents=True, exist_ok=True)

    def committed(self) -> set[str]:
        d = self.commit_dir
        return {p.stem for p in d.glob("*.json")} if d.is_dir() else set()

    def commits(self) -> list[dict[str, Any]]:
        d = self.commit_dir
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []

    def write(self, key: str, batch: Batch, quarantine: list[dict[str, Any]], record: dict[str, Any]) -> None:
        import pyarrow as pa

        from pipelines.filters.table import candidates_to_table

        if batch and batch_len(batch):
            _write_parquet(self.table_dir / f"part-{key}.parquet", candidates_to_table(batch))
        if quarantine:
            _write_parquet(self.quarantine_dir / f"part-{key}.parquet",
                           pa.table({c: [str(q[c]) for q in quarantine] for c in QUARANTINE_COLUMNS}))
        self.write_extra(key, batch)
        atomic_write_text(self.commit_dir / f"{key}.json", json.dumps(record, sort_keys=True, default=float))

    def write_extra(self, key: str, batch: Batch) -> None:
        """Subclasses: more files of the same task, written before the commit record."""

    def quarantine_rows(self) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        for p in sorted(self.quarantine_dir.glob("part-*.parquet")):
            rows.extend(pq.read_table(p).to_pylist())
        return rows


@dataclass
class CandidatesSink(TableSink):
    """The candidates table plus the kept candidates' target audio (FLAC) for the tier step."""

    @property
    def kept_audio_dir(self) -> Path:
        return Path(self.root) / "kept_audio"

    def prepare(self) -> None:
        super().prepare()
        self.kept_audio_dir.mkdir(parents=True, exist_ok=True)

    def write_extra(self, key: str, batch: Batch) -> None:
        import pyarrow as pa

        from storage.audio import encode_audio

        if not batch or not batch_len(batch) or "keep" not in batch:
            return
        kept = select_rows(batch, np.asarray(batch["keep"], dtype=bool))
        if not batch_len(kept):
            return
        table = pa.table({
            "candidate_id": [str(c) for c in kept["candidate_id"]],
            "sample_rate": [int(s) for s in kept["sample_rate"]],
            "target_flac": [encode_audio(np.asarray(t, dtype=np.float32), int(s), "FLAC")
                            for t, s in zip(kept["target"], kept["sample_rate"])],
        })
        _write_parquet(self.kept_audio_dir / f"part-{key}.parquet", table)


def read_kept_audio(root: str | Path) -> dict[str, tuple[bytes, int]]:
    """candidate_id -> (FLAC bytes, sample rate) of every kept candidate a CandidatesSink committed."""
    import pyarrow.parquet as pq

    out: dict[str, tuple[bytes, int]] = {}
    for p in sorted((Path(root) / "kept_audio").glob("part-*.parquet")):
        t = pq.read_table(p).to_pydict()
        for cid, sr, data in zip(t["candidate_id"], t["sample_rate"], t["target_flac"]):
            out[cid] = (data, int(sr))
    return out
