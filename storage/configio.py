"""Typed configuration: YAML presets validated into pydantic models, with dotted overrides.

Why pydantic with `extra="forbid"`: a misspelt key in a 200-line preset must fail loudly with its key path and
file instead of silently falling back to a default and producing a different dataset.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from storage.errors import reconstructible

T = TypeVar("T", bound=BaseModel)


class Section(BaseModel):
    """Base for every config section: unknown keys are errors; frozen, so no step changes what another reads
    (variants are `model_copy(update=...)` or engine.run_config.with_overrides, which re-validates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@reconstructible
class ConfigError(ValueError):
    """A configuration problem, naming the file and the offending key path."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("invalid configuration\n  " + "\n  ".join(lines))


def _loc_to_path(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=VALUE`; VALUE is read as YAML so `[-3,10]`, `true`, `1e-4` get their natural types."""
    if "=" not in text:
        raise ConfigError("--set", [(text, "override must look like key.path=value")])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", [(key, "empty key path component")])
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError("--set", [(key, f"value is not valid YAML: {exc}")]) from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply dotted overrides to a raw mapping; validation of the key happens afterwards in the model."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError("--set", [(".".join(path), f"'{part}' is not a mapping")])
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("", "config file does not exist")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [("", f"not valid YAML: {exc}")]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("", "top level must be a mapping")])
    return data


def validate(model: type[T], data: dict[str, Any], source: str) -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(_loc_to_path(err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigError(source, problems) from None


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, mapping by mapping (a list or scalar in `top` replaces the base value)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_preset(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset's mapping; `extends: other.yaml` (relative to the file) loads that preset first and merges this one
    over it, so a small preset states only what differs (configs/tiny.yaml extends the demo)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(str(path), [("extends", "presets extend each other in a cycle")])
    data = read_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(str(path), [("extends", "must be a preset file path")])
    return deep_merge(read_preset(path.parent / base, (*_seen, path)), data)


def load_config(model: type[T], path: str | Path | None, overrides: Iterable[str] = (), default: dict | None = None) -> T:
    """Load `path` (or `default` when None), apply overrides, validate into `model`."""
    overrides = list(overrides)
    if path is None:
        data = json.loads(json.dumps(default or {}))
        source = "<defaults>"
    else:
        data = read_preset(path)
        source = str(path)
    data = apply_overrides(data, overrides)
    if overrides:
        source = f"{source} (with --set {' '.join(overrides)})"
    return validate(model, data, source)


def config_to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_hash(cfg: BaseModel) -> str:
    """Stable short hash of the resolved config, recorded in lineage."""
    payload = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def write_resolved(cfg: BaseModel, out_dir: str | Path, name: str = "config.resolved.yaml") -> Path:
    """Write the resolved config next to an output so every artefact can be re-made."""
    from storage.atomic import atomic_write_text

    out = Path(out_dir) / name
    atomic_write_text(out, config_to_yaml(cfg))
    return out
