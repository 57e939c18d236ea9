"""Training samples from pseudo-labelled tracks: tier shard samples, ITT and SST construction, ratio mixing.

ClearSep §3.2: a kept track can be used two ways.
- ITT (independent track training): the track is treated as a clean source and mixed with other kept or clean
  tracks of different labels; target = the track, residual = the others, so mixture == target + residual exactly.
- SST (self-separate training): the natural scene is the mixture and the track the target; the positive query is
  its label and the negatives are the scene's other labels.

Every sample is a dict in the shard reader's format (`mix`, `target`, `residual` float32 [T], `json`) so the
separator trainer consumes synthetic, ITT and SST streams alike. Every random choice comes from a seeded generator.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from pipelines.mixing.prompts import query_text
from storage.shards.writer import safe_key

Sample = dict[str, Any]
TIER_NAMES = ("itt", "sst")


class TrainingDataError(ValueError):
    """A tier sample that cannot be used (missing member, wrong tier); names the sample key."""


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2) + 1e-12))


def tier_sample(row: Mapping[str, Any], tier: str, thresholds: Mapping[str, Any], model_versions: Mapping[str, Any],
                config_hash: str, code_version: str, encode: Any) -> Sample:
    """A WebDataset sample for a kept candidate row: scene as `mix.flac`, track as `target.flac`, scene - track as
    `residual.flac`, and JSON with scores, thresholds, model versions (incl. the separator checkpoint hash), tier and
    scene lineage. `encode(audio, sr) -> bytes` is the audio encoder (storage.audio.encode_audio)."""
    if tier not in TIER_NAMES:
        raise TrainingDataError(f"unknown tier {tier!r}")
    sr = int(row["sample_rate"])
    target = np.asarray(row["target"], dtype=np.float32)
    scene = np.asarray(row["mixture"], dtype=np.float32)
    residual = scene - target
    score_keys = ("re_sdr_db", "re_sisdr_db", "clap_target", "clap_residual", "pc_target", "silence_ratio", "judge_overall",
                  "judge_recall", "judge_precision", "judge_faithfulness", "rerank_score")
    scores = {k: (None if row.get(k) is None or not np.isfinite(float(row[k])) else float(row[k])) for k in score_keys if k in row}
    meta = {
        "key": row["candidate_id"],
        "sample_rate": sr,
        "num_frames": int(len(target)),
        "duration_s": len(target) / sr,
        "recipe": f"pseudo_{tier}",
        "operator": "extract",
        "prompt": row["positive_text"],
        "positive_labels": list(row["positive_labels"]),
        "negative_labels": list(row.get("negative_labels") or []),
        "positive_text": row["positive_text"],
        "negative_text": row.get("negative_text"),
        "query_mode": "posneg" if row.get("negative_text") else "pos",
        "silent_target": False,
        "target_labels": [row["label"]],
        "residual_labels": [lbl for lbl in row["scene_labels"] if lbl != row["label"]],
        "spans": [],
        "spec": {"query_mode_used": row.get("query_mode"), "gain_db": row.get("gain_db")},
        "seed": None,
        "lineage": {"source_clip_ids": [], "recipe": f"pseudo_{tier}", "config_hash": config_hash, "code_version": code_version},
        "scores": scores,
        "model_versions": dict(model_versions),
        "tier": tier,
        "thresholds": dict(thresholds),
        "scene_lineage": {"scene_id": row["scene_id"], "scene_path": row.get("scene_path", ""), "scene_labels": list(row["scene_labels"]),
                          "query_index": int(row["query_index"])},
    }
    return {
        "__key__": safe_key(row["candidate_id"]),  # meta["key"] keeps the candidate id as it is
        "mix.flac": encode(scene, sr),
        "target.flac": encode(target, sr),
        "residual.flac": encode(residual, sr),
        "json": meta,
    }


def _label_of(sample: Sample) -> str:
    labels = sample["json"].get("target_labels") or sample["json"].get("positive_labels") or []
    if not labels:
        raise TrainingDataError(f"sample {sample.get('__key__')!r} has no target label")
    return labels[0]


def sst_sample(track: Sample) -> Sample:
    """SST: the natural scene is the mixture, the track the target, positive = its label, negatives = the others."""
    meta = dict(track["json"])
    if meta.get("tier") != "sst":
        raise TrainingDataError(f"sample {track.get('__key__')!r} is tier {meta.get('tier')!r}, SST needs 'sst'")
    label = _label_of(track)
    scene_labels = meta.get("scene_lineage", {}).get("scene_labels") or [label] + list(meta.get("negative_labels", []))
    negatives = [lbl for lbl in scene_labels if lbl != label]
    mix = np.asarray(track["mix"], dtype=np.float32)
    target = np.asarray(track["target"], dtype=np.float32)
    meta.update({"recipe": "sst", "positive_labels": [label], "negative_labels": negatives,
                 "positive_text": query_text([label]), "negative_text": query_text(negatives),
                 "query_mode": "posneg" if negatives else "pos", "residual_labels": negatives})
    return {"__key__": f"sst-{track['__key__']}", "mix": mix, "target": target, "residual": mix - target, "json": meta}


def _fit(audio: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop to n frames, or zero-pad at a random offset when shorter."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) >= n:
        start = int(rng.integers(0, len(audio) - n + 1))
        return audio[start:start + n]
    out = np.zeros(n, dtype=np.float32)
    start = int(rng.integers(0, n - len(audio) + 1))
    out[start:start + len(audio)] = audio
    return out


class ITTBuilder:
    """ITT samples: a kept track mixed with 1..max_others tracks of other labels from kept + clean pools.

    A sized, indexable sample source (what the separator trainer draws from): item i is track `i % len(tracks)`
    mixed with partners and gains drawn from `(seed, i)`, so `variants` different mixtures exist per track and any
    item can be rebuilt anywhere (another process, a resumed run) without replaying a stream. Items cost nothing
    until drawn, so `variants` is large: with 16 per track the demo's retrain (4 kept tracks, 350 steps) saw each of
    its 64 mixtures ~11 times and lost 1.2 dB natural SDRi; with 1024 it gained 0.4 dB (docs/perf/engine.md).
    """

    def __init__(self, tracks: Sequence[Sample], others: Sequence[Sample] = (), seed: int = 0, max_others: int = 2,
                 snr_db: tuple[float, float] = (-5.0, 5.0), variants: int = 1024) -> None:
        if not tracks:
            raise TrainingDataError("ITT needs at least one kept track")
        if variants < 1:
            raise TrainingDataError(f"variants must be >= 1, got {variants}")
        self.tracks = list(tracks)
        self.pool = list(tracks) + list(others)
        self.seed = seed
        self.max_others = max_others
        self.snr_db = snr_db
        self.variants = variants

    def __len__(self) -> int:
        return len(self.tracks) * self.variants

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(f"ITT item {i} outside [0, {len(self)})")
        return self.build(self.tracks[i % len(self.tracks)], np.random.default_rng([self.seed, i]), i)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def metas(self) -> list[dict[str, Any]]:
        """Label-level metadata of the items (query vocabulary and phrases) without mixing any audio."""
        out = [{"target_labels": [_label_of(t)], "positive_labels": [_label_of(t)], "positive_text": query_text([_label_of(t)])}
               for t in self.tracks]
        return out + [{"target_labels": [_label_of(o)]} for o in self.pool[len(self.tracks):]]

    def build(self, track: Sample, rng: np.random.Generator, index: int) -> Sample:
        label = _label_of(track)
        target = np.asarray(track["target"], dtype=np.float32)
        n = len(target)
        k = int(rng.integers(1, self.max_others + 1))
        chosen: list[Sample] = []
        used = {label}
        for idx in rng.permutation(len(self.pool)):
            cand = self.pool[int(idx)]
            cl = _label_of(cand)
            if cl in used:
                continue
            chosen.append(cand)
            used.add(cl)
            if len(chosen) == k:
                break
        residual = np.zeros(n, dtype=np.float32)
        target_rms = _rms(target)
        for other in chosen:
            audio = _fit(other["target"], n, rng)
            snr = float(rng.uniform(*self.snr_db))
            gain = target_rms / _rms(audio) * 10.0 ** (-snr / 20.0) if _rms(audio) > 1e-6 else 0.0
            residual += (gain * audio).astype(np.float32)
        other_labels = [_label_of(o) for o in chosen]
        mix = target + residual
        peak = float(np.max(np.abs(mix))) if n else 0.0
        scale = 0.95 / peak if peak > 0.95 else 1.0
        sr = int(track["json"]["sample_rate"])
        meta = {
            "key": f"itt-{self.seed}-{index:07d}",
            "sample_rate": sr, "num_frames": n, "duration_s": n / sr, "recipe": "itt", "operator": "extract",
            "prompt": query_text([label]), "positive_labels": [label], "negative_labels": other_labels,
            "positive_text": query_text([label]), "negative_text": query_text(other_labels),
            "query_mode": "posneg" if other_labels else "pos", "silent_target": False,
            "target_labels": [label], "residual_labels": other_labels, "spans": [], "spec": {"others": [o["__key__"] for o in chosen]},
            "seed": self.seed, "lineage": {"source_clip_ids": [track["__key__"]] + [o["__key__"] for o in chosen], "recipe": "itt"},
            "scene_lineage": track["json"].get("scene_lineage", {}),
        }
        return {"__key__": meta["key"], "mix": mix * scale, "target": target * scale, "residual": residual * scale, "json": meta}


def normalised_ratios(ratios: Mapping[str, float], available: Iterable[str]) -> dict[str, float]:
    """Ratios restricted to available streams, renormalised to sum to 1 (a tier with no kept track is left out)."""
    avail = set(available)
    kept = {k: float(v) for k, v in ratios.items() if k in avail and v > 0}
    if not kept:
        raise TrainingDataError(f"no stream left to train on: ratios {dict(ratios)}, available {sorted(avail)}")
    total = sum(kept.values())
    return {k: v / total for k, v in kept.items()}
