"""The resolved stemforge configuration: one typed section per room, composed here at the top.

Each section class lives next to the code it configures (lower layers never import this module); this file only
composes them, loads presets and applies `--set` overrides.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from engine.config import EngineConfig
from models.aesthetics.config import PCConfig
from models.clap.config import ClapConfig
from models.judge.config import JudgeConfig
from models.separator.config import SeparatorConfig
from pipelines.corpus.config import CorpusConfig
from pipelines.filters.config import FilterConfig
from pipelines.mixing.config import MixingConfig
from pipelines.pseudolabel.config import PseudoLabelConfig
from storage.audio import AudioConfig
from storage.configio import Section, load_config
from storage.shards.config import ShardConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


class RunSection(Section):
    """Where a run writes and which seed drives every random choice."""

    name: str = "demo"
    out_root: str = "runs"
    seed: int = 0
    iterations: int = 1


class StemforgeConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    mixing: MixingConfig = Field(default_factory=MixingConfig)
    shards: ShardConfig = Field(default_factory=ShardConfig)
    separator: SeparatorConfig = Field(default_factory=SeparatorConfig)
    clap: ClapConfig = Field(default_factory=ClapConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    pc: PCConfig = Field(default_factory=PCConfig)
    pseudo_label: PseudoLabelConfig = Field(default_factory=PseudoLabelConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)


def load(path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()) -> StemforgeConfig:
    """Load a preset (default: configs/demo.yaml when present, else built-in defaults) with overrides."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(StemforgeConfig, path, overrides)
