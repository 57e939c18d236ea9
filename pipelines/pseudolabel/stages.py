"""Pseudo-labeling stages: load scenes, then turn each scene into one candidate row per query.

Input rows (one per scene): `scene_id`, `path` (or `mixture` already loaded), `sample_rate`, and `event_labels`
(mode "labels") or `caption` (mode "captions"). Output rows (one per track): the query (label, texts, labels),
the chosen variant, `mixture` (the scene), `target`, `residual` (= scene - target, kept for every query), the scene
remix scores `re_sdr_db`/`re_sisdr_db` of all tracks of the scene, `rerank_score`, `duration_s`.
Scenes with fewer than `min_events` queries produce no rows; the stage counts them (`scenes_skipped_min_events`)
so the run summary shows them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models.judge.prompt import others_in
from pipelines.filters.remix import remix_scores
from pipelines.filters.scoring import load_model, section_dict
from pipelines.pseudolabel.candidates import (best_variant, query_texts, rerank_score, separate_queries, variants)
from pipelines.pseudolabel.config import PseudoLabelConfig
from pipelines.pseudolabel.decompose import Query, label_queries
from pipelines.pseudolabel.prompted import prompt_queries, split_caption
from pipelines.stage import BaseStage, Batch, StageContext, batch_len, concat_batches, rows_to_batch
from storage.audio import AudioConfig, load_audio

CANDIDATE_COLUMNS = (
    "candidate_id", "scene_id", "query_index", "label", "positive_text", "negative_text", "positive_labels",
    "negative_labels", "scene_labels", "query_mode", "gain_db", "num_variants", "rerank_score", "sample_rate",
    "duration_s", "re_sdr_db", "re_sisdr_db", "scene_path", "mixture", "target", "residual",
)


class LoadScenes(BaseStage):
    """Adds `mixture` (float32 [T] at the configured rate) from `path`; a bad file raises AudioError naming it."""

    name = "load_scenes"
    inputs = ("path",)
    outputs = ("mixture", "sample_rate")

    def __init__(self, audio: AudioConfig | dict[str, Any]) -> None:
        super().__init__()
        self.audio_cfg = AudioConfig.model_validate(section_dict(audio))

    def __call__(self, batch: Batch) -> Batch:
        audios = [load_audio(p, self.audio_cfg) for p in batch["path"]]
        return {**batch, "mixture": audios, "sample_rate": np.full(len(audios), self.audio_cfg.sample_rate, dtype=np.int64)}


class PseudoLabel(BaseStage):
    """Separates every query of every scene (with variants and reranking) and emits one row per track.

    `separator` is `{"checkpoint": path}`; `clap`/`judge` are their config sections (needed only for reranking,
    `num_candidates > 1`). Models come from the worker's cache, so the scoring stages fused after this one reuse
    the same CLAP and judge instances. Tests may assign `separator`/`clap`/`judge` objects before calling.
    """

    name = "pseudo_label"
    passthrough = False
    outputs = CANDIDATE_COLUMNS
    uses_models = True

    def __init__(self, cfg: PseudoLabelConfig | dict[str, Any], separator: dict[str, Any] | None = None,
                 clap: Any = None, judge: Any = None) -> None:
        super().__init__()
        self.cfg = PseudoLabelConfig.model_validate(section_dict(cfg))
        self.inputs = ("scene_id", "mixture", "sample_rate", "event_labels" if self.cfg.mode == "labels" else "caption")
        self.separator_spec = dict(separator or {})
        self.clap_spec = section_dict(clap) if clap is not None else None
        self.judge_spec = section_dict(judge) if judge is not None else None
        self.variants = variants(self.cfg)
        if len(self.variants) > 1 and (self.clap_spec is None or self.judge_spec is None):
            raise ValueError("pseudo_label.num_candidates > 1 needs CLAP and judge scorers for reranking")
        self.separator: Any = None
        self.clap: Any = None
        self.judge: Any = None

    def setup(self, ctx: StageContext) -> None:
        if self.separator is None:
            if not self.separator_spec.get("checkpoint"):
                raise ValueError("pseudo_label needs a separator checkpoint ({'checkpoint': path})")
            self.separator = load_model(ctx, "separator", self.separator_spec)
        if len(self.variants) > 1:
            self.clap = self.clap or load_model(ctx, "clap", self.clap_spec)  # type: ignore[arg-type]
            self.judge = self.judge or load_model(ctx, "judge", self.judge_spec)  # type: ignore[arg-type]

    def queries_for(self, row: dict[str, Any]) -> list[Query]:
        if self.cfg.mode == "labels":
            return label_queries(row["scene_id"], list(row["event_labels"]))
        return prompt_queries(row["scene_id"], split_caption(row["caption"]))

    def _separate(self, mixtures: np.ndarray, sr: int, pos: list[str], neg: list[str | None]) -> np.ndarray:
        return self.separator.separate(mixtures, sr, pos, neg)

    def _rerank(self, scene: np.ndarray, sr: int, queries: list[Query], est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chosen variant index per query, score of the chosen one); no scoring when there is one variant."""
        q, v, _ = est.shape
        if v == 1:
            return np.zeros(q, dtype=int), np.full(q, np.nan)
        flat = est.reshape(q * v, -1)
        texts = [queries[i].positive_text for i in range(q) for _ in range(v)]
        mixes = np.repeat(scene[None, :], q * v, axis=0)
        clap = np.asarray(self.clap.score(texts, flat, sr), dtype=np.float64).reshape(q, v)
        others = [others_in(queries[i].scene_labels, queries[i].positive_labels) for i in range(q) for _ in range(v)]
        judge = np.asarray(self.judge.score(mixes, flat, texts, sr, others=others)["overall"],
                           dtype=np.float64).reshape(q, v)
        scores = rerank_score(judge, clap, self.cfg.judge_weight, self.cfg.clap_weight)
        best = best_variant(scores)
        return best, scores[np.arange(q), best]

    def scene_rows(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        queries = self.queries_for(row)
        if len(queries) < self.cfg.min_events:
            self.count("scenes_skipped_min_events")
            return []
        scene = np.asarray(row["mixture"], dtype=np.float32)
        sr = int(row["sample_rate"])
        est = separate_queries(self._separate, scene, sr, queries, self.variants, self.cfg.window_s, self.cfg.overlap_s)
        best, best_scores = self._rerank(scene, sr, queries, est)
        targets = [est[i, best[i]] for i in range(len(queries))]
        re_sdr, re_sisdr = remix_scores(scene, targets)
        rows = []
        for i, query in enumerate(queries):
            variant = self.variants[best[i]]
            pos, neg = query_texts(query, variant)
            rows.append({
                "candidate_id": query.candidate_id,
                "scene_id": query.scene_id,
                "query_index": query.index,
                "label": query.label,
                "positive_text": pos,
                "negative_text": neg,
                "positive_labels": list(query.positive_labels),
                "negative_labels": list(query.negative_labels) if neg is not None else [],
                "scene_labels": list(query.scene_labels),
                "query_mode": variant.query_mode,
                "gain_db": variant.gain_db,
                "num_variants": len(self.variants),
                "rerank_score": float(best_scores[i]),
                "sample_rate": sr,
                "duration_s": len(scene) / sr,
                "re_sdr_db": re_sdr,
                "re_sisdr_db": re_sisdr,
                "scene_path": row.get("path", ""),
                "mixture": scene,
                "target": targets[i].astype(np.float32),
                "residual": (scene - targets[i]).astype(np.float32),
            })
        return rows

    def __call__(self, batch: Batch) -> Batch:
        if self.separator is None:
            self.setup(StageContext())
        rows: list[dict[str, Any]] = []
        for i in range(batch_len(batch)):
            rows.extend(self.scene_rows({k: batch[k][i] for k in batch}))
        out = rows_to_batch(rows)
        for key in ("re_sdr_db", "re_sisdr_db", "rerank_score", "gain_db", "duration_s"):
            if key in out:
                out[key] = np.asarray(out[key], dtype=np.float64)
        return concat_batches([out]) if out else {}
