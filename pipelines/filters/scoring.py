"""Shared plumbing for scoring stages: models come from the worker's model cache, rows are scored in equal-length
groups.

Scorers take `[N, T]` arrays; candidates from different scenes differ in length, so rows are grouped by length
(no padding: padding would change CLAP embeddings and silence ratios). A stage names its model by kind and config
section (JSON-able, so a worker can rebuild it); `load_model` builds it once per worker on the worker's device,
and every stage asking for the same section gets the same instance.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from pipelines.stage import BaseStage, StageContext

MODEL_KINDS = ("clap", "judge", "pc", "separator")


def length_groups(audios: list[np.ndarray]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(audios):
        groups.setdefault(len(a), []).append(i)
    return groups


def stack(audios: list[np.ndarray], idx: list[int]) -> np.ndarray:
    return np.stack([np.asarray(audios[i], dtype=np.float32) for i in idx])


def sample_rate_of(batch: Mapping[str, Any]) -> int:
    rates = {int(r) for r in batch["sample_rate"]}
    if len(rates) != 1:
        raise ValueError(f"a scoring batch must have one sample rate, got {sorted(rates)}")
    return rates.pop()


def section_dict(section: Any) -> dict[str, Any]:
    """A config section (pydantic) or its dump -> a JSON-able dict (what a stage spec carries)."""
    if hasattr(section, "model_dump"):
        return section.model_dump(mode="json")
    return dict(section)


def load_model(ctx: StageContext, kind: str, section: Mapping[str, Any]) -> Any:
    """The `kind` model of `section` on the worker's device, built once per worker (`ctx.models`)."""
    spec = {**dict(section), "device": ctx.device}
    if kind == "clap":
        from models.clap.base import build_clap
        from models.clap.config import ClapConfig

        return ctx.models.get(kind, spec, lambda: build_clap(ClapConfig.model_validate(spec)))
    if kind == "judge":
        from models.judge.config import JudgeConfig
        from models.judge.scorer import build_judge

        return ctx.models.get(kind, spec, lambda: build_judge(JudgeConfig.model_validate(spec)))
    if kind == "pc":
        from models.aesthetics.config import PCConfig
        from models.aesthetics.scorer import build_pc

        return ctx.models.get(kind, spec, lambda: build_pc(PCConfig.model_validate(spec)))
    if kind == "separator":
        from models.separator.infer import Separator

        return ctx.models.get(kind, spec, lambda: Separator.load(spec["checkpoint"], ctx.device))
    raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")


class ModelScoringStage(BaseStage):
    """Base for stages that call one scorer (`model_kind`), built from its config section in `setup`.

    `info_columns=True` also records the scorer's identity per row (`<kind>_backend`, `<kind>_checkpoint_hash`,
    `<kind>_version`), so a table says which model produced its scores.
    """

    model_kind = ""
    uses_models = True

    def __init__(self, section: Any, name: str | None = None, info_columns: bool = False) -> None:
        super().__init__()
        if name:
            self.name = name
        self.section = section_dict(section)
        self.info_columns = bool(info_columns)
        if self.info_columns:
            self.outputs = (*self.outputs, *(f"{self.model_kind}_{k}" for k in ("backend", "checkpoint_hash", "version")))
        self.scorer: Any = None

    def setup(self, ctx: StageContext) -> None:
        if self.scorer is None:
            self.scorer = load_model(ctx, self.model_kind, self.section)

    def _ensure(self) -> None:
        if self.scorer is None:
            self.setup(StageContext())

    def with_info(self, out: dict[str, Any], n: int) -> dict[str, Any]:
        if self.info_columns:
            from models.scoring import info_columns

            out.update({k: list(v) for k, v in info_columns(self.model_kind, self.scorer.info(), n).items()})
        return out


class LoadShardSamples(BaseStage):
    """One task row per shard (`url`, `limit`: samples to read, -1 = all) -> one row per sample with the audio and
    query columns the scoring stages read (`stemforge score`). A damaged shard raises ShardReadError (its row is
    quarantined by the executor)."""

    name = "load_shard_samples"
    inputs = ("url", "limit")
    outputs = ("key", "shard", "mixture", "target", "residual", "positive_text", "residual_labels", "sample_rate")
    passthrough = False

    def __call__(self, batch: Any) -> Any:
        from pathlib import Path

        from storage.shards.reader import decode_sample, iter_raw_samples

        out: dict[str, list[Any]] = {c: [] for c in self.outputs}
        for url, limit in zip(batch["url"], batch["limit"]):
            for i, raw in enumerate(iter_raw_samples(str(url))):
                if 0 <= int(limit) <= i:
                    break
                s = decode_sample(raw)
                out["key"].append(str(s["__key__"]))
                out["shard"].append(Path(str(url)).name)
                out["mixture"].append(s["mix"])
                out["target"].append(s["target"])
                out["residual"].append(s["residual"])
                out["positive_text"].append(s["json"].get("positive_text"))
                out["residual_labels"].append([str(x) for x in (s["json"].get("residual_labels") or [])])
                out["sample_rate"].append(int(s["json"].get("sample_rate", s["sample_rate"])))
        return out if out["key"] else {}
