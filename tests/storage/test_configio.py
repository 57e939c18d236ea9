"""Typed configuration: presets, unknown keys and wrong types reported with key path and file, --set overrides."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.run_config import DEFAULT_CONFIG, StemforgeConfig, load, with_overrides
from storage.configio import ConfigError, config_hash, load_config, parse_override, write_resolved


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_preset_loads_and_mirrors_defaults() -> None:
    cfg = load()
    assert DEFAULT_CONFIG.is_file()
    # load() read the preset (not just the code defaults): equal to validating the file's own YAML
    assert cfg == StemforgeConfig.model_validate(yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")))
    # the preset mirrors the code defaults: a preset that drifted would silently produce a different demo
    assert cfg.corpus == StemforgeConfig().corpus
    assert cfg.audio.sample_rate == 16000


def test_unknown_key_names_key_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "corpus:\n  demo:\n    scene_secnds: 3.0\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    assert str(path) in text
    assert "corpus.demo.scene_secnds" in text
    assert info.value.problems[0][0] == "corpus.demo.scene_secnds"


def test_wrong_type_names_key_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "audio:\n  sample_rate: fast\ncorpus:\n  demo:\n    sources_per_class: {train: many}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    keys = [p for p, _ in info.value.problems]
    assert "audio.sample_rate" in keys
    assert "corpus.demo.sources_per_class.train" in keys
    assert str(path) in str(info.value)


def test_semantic_validation_in_corpus_section(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "corpus:\n  demo:\n    rt60_s: [0.9, 0.1]\n    sources_per_class: {training: 3}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    assert "corpus.demo.rt60_s" in text and "corpus.demo.sources_per_class" in text and "training" in text


def test_set_overrides_apply_with_yaml_types(tmp_path: Path) -> None:
    cfg = load(None, ["corpus.demo.scene_seconds=5", "corpus.demo.rt60_s=[0.2,0.3]", "corpus.demo.classes=[dog, rain]",
                      "run.seed=7"])
    assert cfg.corpus.demo.scene_seconds == 5.0
    assert cfg.corpus.demo.rt60_s == (0.2, 0.3)
    assert cfg.corpus.demo.classes == ["dog", "rain"]
    assert cfg.run.seed == 7
    assert config_hash(cfg) != config_hash(load())


def test_set_with_unknown_key_or_bad_syntax() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, ["corpus.demo.nonsense=1"])
    assert "corpus.demo.nonsense" in str(info.value) and "--set" in str(info.value)
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("corpus.demo.scene_seconds")
    with pytest.raises(ConfigError, match="empty key path"):
        parse_override("corpus..x=1")
    with pytest.raises(ConfigError, match="not a mapping"):
        load(None, ["audio.sample_rate.x=1"])


def test_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write(tmp_path / "bad.yaml", "corpus: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    assert load(write(tmp_path / "empty.yaml", "")) == StemforgeConfig()


def test_resolved_config_roundtrips_and_hash_is_stable(tmp_path: Path) -> None:
    cfg = load(None, ["corpus.demo.scenes.train=3", "corpus.importer.label_domains={Violin: music}"])
    out = write_resolved(cfg, tmp_path)
    assert out.name == "config.resolved.yaml"
    again = load_config(StemforgeConfig, out)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    data = yaml.safe_load(out.read_text())
    assert data["corpus"]["demo"]["scenes"]["train"] == 3


def test_config_is_frozen_and_overrides_are_validated() -> None:
    cfg = load()
    with pytest.raises(ValueError, match="frozen"):
        cfg.corpus.demo.workers = 3
    with pytest.raises(ValueError, match="corpus.demo.workers"):
        with_overrides(cfg, {"corpus.demo.workers": -1})
    assert with_overrides(cfg, {"run.seed": 7}).run.seed == 7 and cfg.run.seed == 0


def test_a_preset_extends_another(tmp_path: Path) -> None:
    tiny = load(DEFAULT_CONFIG.parent / "tiny.yaml")
    demo = load()
    assert tiny.run.name == "tiny" and tiny.corpus.demo.scenes == {"train": 3, "val": 1, "test": 2}
    assert tiny.mixing == demo.mixing and tiny.pseudo_label == demo.pseudo_label  # what it does not state: the demo's
    assert tiny.filters.judge_enabled is False and demo.filters.judge_enabled is True  # a key it states, in a section
    assert tiny.filters.model_copy(update={"judge_enabled": True}) == demo.filters  # whose other keys stay the demo's
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\nrun: {seed: 3}\n")
    b.write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load(a)
