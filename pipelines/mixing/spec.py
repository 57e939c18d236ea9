"""The mix spec: everything needed to render one tuple again, stored verbatim in the sample's JSON.

Why a spec separate from the audio: `stemforge mix rerender` must reproduce the exact stored audio from the
sources alone, and a reviewer must be able to read *why* a tuple sounds as it does (which clips, which offsets,
which levels) without re-running the sampler. Levels are stored as intended loudness (dBFS) or gains, not as
realised linear gains: the renderer derives the gains from the audio, deterministically.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SPEC_VERSION = 1
Role = Literal["target", "residual"]


class SpecError(ValueError):
    """A spec dict that cannot be turned back into a MixSpec (missing or mistyped field)."""


@dataclass
class Component:
    """One source clip placed in the mixture.

    `level_db` (active-RMS loudness, dBFS) sets the level when given; otherwise `gain_db` is applied to the clip as
    it is (aligned multitrack stems keep their natural balance plus an offset).
    """

    clip_id: str
    path: str
    labels: list[str]
    role: Role
    source_start_s: float
    onset_s: float
    duration_s: float
    level_db: float | None = None
    gain_db: float = 0.0
    group: int | None = None  # index into MixSpec.groups (OpenSep sub-mixtures)


@dataclass
class Group:
    """A sub-mixture whose members are scaled jointly to `level_db` after their own levels were set."""

    members: list[int]
    level_db: float


@dataclass
class MixSpec:
    key: str
    recipe: str
    seed: int
    index: int
    sample_rate: int
    duration_s: float
    components: list[Component]
    operator: Literal["extract", "remove"] = "extract"
    prompt: str = ""
    query_mode: Literal["pos", "neg", "posneg"] = "posneg"
    positive_labels: list[str] = field(default_factory=list)
    negative_labels: list[str] = field(default_factory=list)
    silent_target: bool = False
    groups: list[Group] = field(default_factory=list)
    peak_limit: float = 0.95
    frame_s: float = 0.05
    gate_db: float = 30.0
    span_params: dict[str, Any] = field(default_factory=dict)  # SpanConfig used for `spans` (re-render needs it)
    info: dict[str, Any] = field(default_factory=dict)  # sampled quantities for audit (snr_db per pair, ...)
    version: int = SPEC_VERSION

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    def labels_of(self, role: Role) -> list[str]:
        """Distinct labels of the components with `role`, in first-seen order."""
        seen: list[str] = []
        for comp in self.components:
            if comp.role == role:
                for label in comp.labels:
                    if label not in seen:
                        seen.append(label)
        return seen

    @property
    def target_labels(self) -> list[str]:
        return [] if self.silent_target else self.labels_of("target")

    @property
    def residual_labels(self) -> list[str]:
        return self.labels_of("residual")

    @property
    def source_clip_ids(self) -> list[str]:
        return [c.clip_id for c in self.components]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MixSpec":
        try:
            version = int(data.get("version", SPEC_VERSION))
            if version > SPEC_VERSION:
                raise SpecError(f"spec version {version} is newer than this stemforge ({SPEC_VERSION})")
            payload = dict(data)
            payload["components"] = [Component(**c) for c in data["components"]]
            payload["groups"] = [Group(**g) for g in data.get("groups", [])]
            return cls(**payload)
        except (KeyError, TypeError) as exc:
            raise SpecError(f"malformed mix spec: {exc}") from exc
