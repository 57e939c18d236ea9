"""Planning and rendering at scale: `MixPlanner` (deterministic specs) and `MixStage` (indices -> shard samples).

Determinism: unit u (one draw of sources, which may yield several tuples) uses
`default_rng([seed, recipe_id, 1, u])`; tuple i's own choices (silence augmentation, query mode, prompt template)
use `default_rng([seed, recipe_id, 0, i])`. A tuple whose excerpt turns out silent at render time is redrawn:
attempt r >= 1 draws a fresh unit with `default_rng([seed, recipe_id, 2, i, r])` outside the reuse ledger (so it
depends on i and r only, never on which worker renders it) and keeps the tuple's key; the reasons are kept in the
spec's `info.redrawn`, so `mix rerender` renders the redrawn tuple. Planning is sequential only through the reuse ledger, and it touches no
audio (clip durations come from the manifest), so planning 10k specs takes well under a second and a resumed job
(or a Ray replica) re-plans to exactly the same specs. Rendering a spec needs only the spec and the source files.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.mixing.allocator import tune_allocator
from pipelines.mixing.config import MixingConfig
from pipelines.mixing.pool import ClipCache, PoolError, PoolExhausted, SourcePool, UsageLedger
from pipelines.mixing.queries import choose_queries
from pipelines.mixing.recipes import make_recipe
from pipelines.mixing.render import RenderError, RenderedTuple, render, to_shard_sample
from pipelines.mixing.spec import MixSpec
from pipelines.stage import BaseStage, Batch, StageContext
from storage.audio import AudioConfig, AudioError
from storage.configio import config_hash
from storage.shards.store import SkipSample

log = logging.getLogger("stemforge.mixing")

TUPLE_STREAM = 0
UNIT_STREAM = 1
REDRAW_STREAM = 2


def make_key(recipe: str, seed: int, index: int) -> str:
    """`<recipe>-<seed>-<index>`, zero-padded, no dots (WebDataset splits keys at dots)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    return f"{recipe}-{seed:06d}-{index:08d}"


class MixPlanner:
    """Turns (config, pool, seed) into the i-th MixSpec, reproducibly."""

    def __init__(self, cfg: MixingConfig, pool: SourcePool, seed: int, sample_rate: int, recipe: str | None = None,
                 wild: SourcePool | None = None):
        self.cfg = cfg
        self.pool = pool
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        self.recipe = make_recipe(recipe or cfg.recipe, cfg, pool, wild)
        self.ledger = UsageLedger(cfg.max_uses_per_epoch)
        self._specs: list[MixSpec] = []
        self._unit = 0
        self._unit_first: list[int] = []  # index of the first tuple of each planned unit

    @property
    def epoch(self) -> int:
        return self.ledger.epoch

    def _plan_unit(self) -> None:
        rid = self.recipe.recipe_id
        for attempt in range(2):
            rng = np.random.default_rng([self.seed, rid, UNIT_STREAM, self._unit])
            try:
                drafts = self.recipe.plan_unit(rng, self.ledger)
                break
            except PoolExhausted as exc:
                if attempt == 1:
                    raise PoolError(f"recipe {self.recipe.name}: even a fresh epoch cannot serve unit {self._unit}: {exc}") from exc
                self.ledger.new_epoch()
        self._unit_first.append(len(self._specs))
        for draft in drafts:
            index = len(self._specs)
            trng = np.random.default_rng([self.seed, rid, TUPLE_STREAM, index])
            self._specs.append(self._make_spec(index, draft, trng, dict(draft.info, unit=self._unit, epoch=self.ledger.epoch)))
        self._unit += 1

    def _make_spec(self, index: int, draft: Any, trng: np.random.Generator, info: dict[str, Any]) -> MixSpec:
        tlabels = _labels(draft.components, "target")
        rlabels = _labels(draft.components, "residual")
        q = choose_queries(trng, self.cfg.queries, draft.operator, tlabels, rlabels, self.pool.classes)
        return MixSpec(
            key=make_key(self.recipe.name, self.seed, index), recipe=self.recipe.name, seed=self.seed, index=index,
            sample_rate=self.sample_rate, duration_s=self.cfg.duration_s, components=draft.components,
            operator=q.operator, prompt=q.prompt, query_mode=q.query_mode, positive_labels=q.positive_labels,
            negative_labels=q.negative_labels, silent_target=q.silent_target, groups=draft.groups,
            peak_limit=self.cfg.loudness.peak_limit, frame_s=self.cfg.loudness.frame_s, gate_db=self.cfg.loudness.gate_db,
            span_params=self.cfg.spans.model_dump(),
            info=info)

    def redraw(self, index: int, attempt: int, reasons: list[str]) -> MixSpec:
        """Replacement for tuple `index` (attempt >= 1): a fresh unit of the recipe, the draft at the tuple's position
        in its unit, same key; `reasons` (why earlier attempts failed) go into `info.redrawn`."""
        base = self.spec(index)
        unit = int(base.info["unit"])
        rid = self.recipe.recipe_id
        rng = np.random.default_rng([self.seed, rid, REDRAW_STREAM, index, attempt])
        drafts = self.recipe.plan_unit(rng, UsageLedger(0))
        draft = drafts[(index - self._unit_first[unit]) % len(drafts)]
        trng = np.random.default_rng([self.seed, rid, REDRAW_STREAM, index, attempt, TUPLE_STREAM])
        return self._make_spec(index, draft, trng, dict(draft.info, unit=unit, epoch=base.info["epoch"], redraw=attempt,
                                                        redrawn=list(reasons)))

    def spec(self, index: int) -> MixSpec:
        if index < 0:
            raise IndexError(f"tuple index must be >= 0, got {index}")
        while len(self._specs) <= index:
            self._plan_unit()
        return self._specs[index]


def _labels(components, role: str) -> list[str]:
    out: list[str] = []
    for c in components:
        if c.role == role:
            out.extend(label for label in c.labels if label not in out)
    return out


def _redrawable(exc: Exception) -> bool:
    """Silent excerpts (and wholly silent source files) are redrawn; unreadable sources are reported instead."""
    return isinstance(exc, RenderError) or (isinstance(exc, AudioError) and exc.kind == "silent")


def build_pool(cfg: MixingConfig, sources: str | Path | None = None, stems_dir: str | Path | None = None) -> SourcePool:
    """The pool a job draws from: a stems folder (multitracks) or a source_clip manifest split."""
    if stems_dir is not None:
        return SourcePool.from_stems_folder(stems_dir)
    if sources is None:
        raise PoolError("mixing needs a source manifest (--sources) or a stems folder (--stems)")
    return SourcePool.from_manifest(sources, cfg.split)


class MixStage(BaseStage):
    """Batch of tuple indices -> rendered shard samples. No ray/prefect here; the engine decides where it runs.

    Input batch: `{"index": int array}`. Output: `{"index", "__key__", "sample" (shard dict or None), "error" (str
    or None)}`; a tuple whose source turned out unreadable or silent is reported, not fatal.
    """

    name = "mix"
    inputs = ("index",)
    outputs = ("index", "__key__", "sample", "error")
    passthrough = False

    def __init__(self, cfg: MixingConfig, seed: int, sources: str | Path | None = None, stems_dir: str | Path | None = None,
                 audio_cfg: AudioConfig | None = None, recipe: str | None = None, scenes: str | Path | None = None):
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.sources = sources
        self.stems_dir = stems_dir
        self.scenes = scenes
        self.audio_cfg = audio_cfg or AudioConfig()
        self.recipe_name = recipe or cfg.recipe
        self.config_hash = config_hash(cfg)
        self.planner: MixPlanner | None = None
        self.cache: ClipCache | None = None

    def setup(self, ctx: StageContext | None = None) -> None:
        if self.planner is None:
            if self.cfg.tune_allocator:
                tune_allocator()
            pool = build_pool(self.cfg, self.sources, self.stems_dir)
            wild = SourcePool.from_scenes(self.scenes, self.cfg.split) if self.scenes is not None else None
            self.planner = MixPlanner(self.cfg, pool, self.seed, self.audio_cfg.sample_rate, self.recipe_name, wild)
            self.cache = ClipCache(self.audio_cfg, self.cfg.cache_clips)

    def render_index(self, index: int) -> RenderedTuple:
        """Tuple `index` as delivered: its planned spec, or the first redraw that renders (raises the last error)."""
        self.setup()
        assert self.planner is not None and self.cache is not None
        reasons: list[str] = []
        for attempt in range(self.cfg.max_redraws + 1):
            spec = self.planner.spec(int(index)) if attempt == 0 else self.planner.redraw(int(index), attempt, reasons)
            try:
                return render(spec, self.cache, self.cfg.spans)
            except (RenderError, AudioError) as exc:
                if not _redrawable(exc) or attempt == self.cfg.max_redraws:
                    raise
                reasons.append(str(exc))
        raise AssertionError("unreachable")

    def __call__(self, batch: Batch) -> Batch:
        self.setup()
        assert self.planner is not None
        out: Batch = {"index": [], "__key__": [], "sample": [], "error": []}
        for index in np.asarray(batch["index"]).tolist():
            spec = self.planner.spec(int(index))
            out["index"].append(int(index))
            out["__key__"].append(spec.key)
            try:
                rendered = self.render_index(int(index))
                if rendered.spec.info.get("redraw"):
                    log.debug("%s redrawn (%d): %s", spec.key, rendered.spec.info["redraw"], rendered.spec.info["redrawn"][-1])
                out["sample"].append(to_shard_sample(rendered, self.config_hash, self.cfg.flac_compression_level,
                                                     self.cfg.encode_threads))
                out["error"].append(None)
            except (RenderError, AudioError) as exc:
                log.warning("skipping %s: %s", spec.key, exc)
                out["sample"].append(None)
                out["error"].append(str(exc))
        return out


def rerender_sample(spec_dict: dict[str, Any], audio_cfg: AudioConfig | None = None, span_cfg=None) -> RenderedTuple:
    """Render a stored spec again from its source files (for `stemforge mix rerender` and audits)."""
    spec = MixSpec.from_dict(spec_dict)
    cache = ClipCache(audio_cfg or AudioConfig(sample_rate=spec.sample_rate), capacity=16)
    return render(spec, cache, span_cfg)


class MixSampleFactory:
    """`factory(i) -> shard sample` for a shard store writer. A tuple that cannot be rendered (unreadable or silent
    source) raises `SkipSample` with its key and reason, so the writer records the drop in its group record, in
    whatever process rendered it. Cheap to construct: planner and clip cache are built on first use."""

    def __init__(self, cfg: MixingConfig, seed: int, sources: str | Path | None = None, stems_dir: str | Path | None = None,
                 audio_cfg: AudioConfig | None = None, recipe: str | None = None, scenes: str | Path | None = None):
        self.stage = MixStage(cfg, seed, sources, stems_dir, audio_cfg, recipe, scenes)

    def __call__(self, index: int) -> dict[str, Any]:
        result = self.stage({"index": np.asarray([index], dtype=np.int64)})
        if result["error"][0] is not None:
            raise SkipSample(result["error"][0], key=result["__key__"][0])
        return result["sample"][0]


def mix_factory(mixing: dict[str, Any], seed: int, audio: dict[str, Any] | None = None, sources: str | None = None,
                stems_dir: str | None = None, recipe: str | None = None, scenes: str | None = None) -> MixSampleFactory:
    """Build a `MixSampleFactory` from plain data (config sections as dicts): the target of the engine's
    `FactorySpec("pipelines.mixing.job:mix_factory", ...)`, called inside each shard-writing worker."""
    return MixSampleFactory(MixingConfig.model_validate(mixing), int(seed), sources, stems_dir,
                            AudioConfig.model_validate(audio or {}), recipe, scenes)
