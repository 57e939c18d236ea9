"""Config section `mixing`: synthetic (mixture, target, residual, prompt) tuple recipes.

Durations are in seconds (independent of the sample rate, which comes from `audio.sample_rate`); every random
quantity is a distribution tuple (see `distributions.py`) so a preset can pin, range or enumerate it.
Defaults follow the papers: PromptSep 2-5 events at SNR U[-3, 10] dB, SAM Audio noisy mixtures at +/-15 dB and
stem offsets of +/-5 dB (+/-15 dB for two speakers), ClearSep query modes 0.25/0.25/0.5 and silence alpha 0.05,
span VAD at -40 dBFS with a 250 ms minimum sounding duration.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.mixing.distributions import check_dist
from storage.configio import Section

RECIPES = ("triplets", "noisy_music", "noisy_speech", "noisy_sound", "promptsep", "opensep")


class LoudnessConfig(Section):
    """Active-frame RMS loudness (dBFS) used to set levels and SNRs; see `loudness.py`."""

    frame_s: float = Field(0.05, gt=0.0, description="frame length for the RMS measurement")
    gate_db: float = Field(30.0, gt=0.0, description="frames quieter than the loudest frame by more are inactive")
    ref_level_db: Any = Field(default_factory=lambda: ["uniform", -30.0, -20.0], description="loudness of the reference source")
    peak_limit: float = Field(0.95, gt=0.0, le=1.0, description="all components are scaled together so no peak exceeds this")

    @field_validator("ref_level_db")
    @classmethod
    def _ref(cls, v: Any) -> Any:
        return check_dist(v, "loudness.ref_level_db", hi=0.0)


class QueryConfig(Section):
    """ClearSep query sampling (Sec. 3.2/3.3.1): which query sides a tuple carries, and silence augmentation."""

    pos_only: float = Field(0.25, ge=0.0)
    neg_only: float = Field(0.25, ge=0.0)
    pos_neg: float = Field(0.5, ge=0.0)
    silence_alpha: float = Field(0.05, ge=0.0, le=1.0, description="probability of an absent-class query with an all-zero target")

    @model_validator(mode="after")
    def _sum(self) -> "QueryConfig":
        total = self.pos_only + self.neg_only + self.pos_neg
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"pos_only + neg_only + pos_neg must be 1, got {total}")
        return self


class SpanConfig(Section):
    """Span prompts from the target by pydub VAD (SAM Audio Sec. 4.2.3)."""

    silence_thresh_dbfs: float = -40.0
    min_sound_ms: int = Field(250, ge=1, description="sounding runs shorter than this are dropped")
    min_silence_ms: int = Field(100, ge=1, description="pauses shorter than this do not split a span")
    seek_step_ms: int = Field(10, ge=1)
    backend: Literal["numpy", "pydub"] = Field("numpy", description="numpy reproduces pydub's result exactly, faster")


class TripletConfig(Section):
    """Fully-real stem triplets: N stems -> N tuples (target = stem i, residual = the rest)."""

    stems_per_group: Any = Field(default_factory=lambda: ["randint", 2, 4])
    group_domain: Literal["music", "speech", "sound", "any"] = "music"
    stem_offset_db: Any = Field(default_factory=lambda: ["uniform", -5.0, 5.0])
    speech_offset_db: Any = Field(default_factory=lambda: ["uniform", -15.0, 15.0])

    @field_validator("stems_per_group", "stem_offset_db", "speech_offset_db")
    @classmethod
    def _dists(cls, v: Any, info: Any) -> Any:
        return check_dist(v, f"triplets.{info.field_name}", lo=2 if info.field_name == "stems_per_group" else None)


class NoisyConfig(Section):
    """Synthetic noisy music / speech / general sound (SAM Audio Sec. 4.1.2): clean target + noise at an SNR."""

    snr_db: Any = Field(default_factory=lambda: ["uniform", -15.0, 15.0])
    speakers: Any = Field(default_factory=lambda: ["randint", 1, 2], description="speech clips summed into the speech target")
    sound_pairing: dict[str, float] = Field(
        default_factory=lambda: {"clean+clean": 0.5, "clean+wild": 0.3, "wild+wild": 0.2},
        description="noisy_sound target+noise pairing probabilities; wild needs a scene pool (--scenes), else clean+clean")

    @field_validator("sound_pairing")
    @classmethod
    def _pairing(cls, v: dict[str, float]) -> dict[str, float]:
        allowed = {"clean+clean", "clean+wild", "wild+wild"}
        if set(v) - allowed or not v:
            raise ValueError(f"sound_pairing keys must be among {sorted(allowed)}, got {sorted(v)}")
        if any(p < 0 for p in v.values()) or sum(v.values()) <= 0:
            raise ValueError("sound_pairing probabilities must be >= 0 with a positive sum")
        return v

    @field_validator("snr_db", "speakers")
    @classmethod
    def _dists(cls, v: Any, info: Any) -> Any:
        return check_dist(v, f"noisy.{info.field_name}", lo=1 if info.field_name == "speakers" else None)


class PromptSepConfig(Section):
    """PromptSep simulation (Sec. 3.1): 2-5 events of distinct classes, target subset, extract or remove."""

    num_events: Any = Field(default_factory=lambda: ["randint", 2, 5])
    snr_db: Any = Field(default_factory=lambda: ["uniform", -3.0, 10.0])
    event_seconds: Any = Field(default_factory=lambda: ["uniform", 1.0, 4.0], description="clipped to the mixture duration")
    remove_prob: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("num_events", "snr_db", "event_seconds")
    @classmethod
    def _dists(cls, v: Any, info: Any) -> Any:
        lo = {"num_events": 2, "event_seconds": 0.0}.get(info.field_name)
        return check_dist(v, f"promptsep.{info.field_name}", lo=lo)


class OpenSepConfig(Section):
    """OpenSep multi-order mixtures: z = mix(mix(x1, x2), mix(x3, x4)); targets are singles and pairs."""

    snr_db: Any = Field(default_factory=lambda: ["uniform", -5.0, 5.0])
    pair_targets: Literal["submix", "all"] = Field("submix", description="submix: (x1,x2),(x3,x4); all: all 6 pairs")

    @field_validator("snr_db")
    @classmethod
    def _dists(cls, v: Any) -> Any:
        return check_dist(v, "opensep.snr_db")


class MixingConfig(Section):
    """Synthetic tuple recipes."""

    recipe: Literal["triplets", "noisy_music", "noisy_speech", "noisy_sound", "promptsep", "opensep"] = "promptsep"
    duration_s: float = Field(4.0, gt=0.0, description="length of every rendered tuple")
    split: str = Field("train", description="which manifest split the sources come from")
    max_uses_per_epoch: int = Field(2, ge=0, description="a source clip is used at most this often per epoch; 0 = unlimited")
    max_redraws: int = Field(
        8, ge=0, description="a tuple whose excerpt turns out silent is drawn again (new clips and excerpts, same key) up "
                             "to this often, so --num N delivers N; unreadable sources are not redrawn (they are reported)")
    cache_clips: int = Field(512, ge=1, description="decoded source clips kept in the LRU cache")
    batch_size: int = Field(16, ge=1, description="tuples per stage batch")
    tune_allocator: bool = Field(
        True, description="raise glibc's mmap/trim thresholds in mixing workers so audio buffers are reused instead of "
                          "page-faulted in again per tuple (render 4x cheaper; output unchanged); see allocator.py")
    encode_threads: int = Field(
        1, ge=1, le=8, description="threads encoding one tuple's stems concurrently (same bytes); >1 only helps when a "
                                   "spare core exists, so keep 1 where every worker gets one CPU")
    flac_compression_level: float | None = Field(
        None, ge=0.0, le=1.0,
        description="FLAC effort for mix/target/residual, 0 = fastest .. 1 = smallest; None = libsndfile default (level 5). "
                    "Lossless either way; measured: level 0 saves no CPU on 24-bit tuples and adds ~1% bytes")
    loudness: LoudnessConfig = Field(default_factory=LoudnessConfig)
    queries: QueryConfig = Field(default_factory=QueryConfig)
    spans: SpanConfig = Field(default_factory=SpanConfig)
    triplets: TripletConfig = Field(default_factory=TripletConfig)
    noisy: NoisyConfig = Field(default_factory=NoisyConfig)
    promptsep: PromptSepConfig = Field(default_factory=PromptSepConfig)
    opensep: OpenSepConfig = Field(default_factory=OpenSepConfig)
