"""The one way stemforge reads a checkpoint file: `torch.load(weights_only=True)`, errors that name the file.

Why one loader: a `.pt` file is a pickle, and unpickling runs whatever callable the file names (`os.system`,
`builtins.exec`, ...). `weights_only=True` makes torch's restricted unpickler refuse every global outside its
allow-list (tensors, plain containers, numbers, strings) *before* anything is called, so a tampered file fails
here and its payload never runs. Every model family (separator, judge, PC, CLAP, laion-clap, audiobox, the
weights hash) goes through `read_checkpoint`, and through `load_weights` to put the tensors into a module, so a
file with wrong keys or shapes fails with the keys named instead of deep inside `load_state_dict`.

The single exception is `trust=True`, used only for the audiobox-aesthetics release when the user sets
`pc.trust_checkpoint: true` (docs/SECURITY.md): that is full unpickling, i.e. the file can run code.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from storage.errors import reconstructible

log = logging.getLogger("stemforge.models")


@reconstructible
class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe or not of the expected kind; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


_GLOBAL = re.compile(r"GLOBAL ([\w.]*\w)(?: whose module ([\w.]+))?")
_OPCODE = re.compile(r"Unsupported operand (\d+)")


def _refusal_detail(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, in a few words (its own message goes on to suggest
    `weights_only=False` or allow-listing the global, exactly what must not be done with an unknown file)."""
    text = str(exc)
    found = _GLOBAL.search(text)
    if found:
        name, module = found.group(1), found.group(2)
        return f"it references the global {name if not module or name.startswith(module + '.') else module + '.' + name}"
    found = _OPCODE.search(text)
    if found:
        return f"it uses pickle opcode {found.group(1)}, which a weights-only load does not execute"
    return "it holds an object outside the weights-only allow-list"


def read_checkpoint(path: str | os.PathLike[str], what: str, *, trust: bool = False,
                    map_location: str | torch.device = "cpu", unsafe_hint: str = "") -> Any:
    """Unpickle `path` with `weights_only=True` (tensors and plain containers only) and return the object.

    `what` names the expected kind in messages ("separator", "laion-clap", ...). Raises `CheckpointError` for a
    missing file, a directory, a truncated or foreign file, and for a pickle that names a non-allow-listed global
    (nothing of such a file runs). `trust=True` is full unpickling: only for the audiobox release behind
    `pc.trust_checkpoint` (see the module docstring). `unsafe_hint` is appended to the unsafe-pickle message.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, f"checkpoint not found ({what} checkpoint file does not exist)")
    if p.is_dir():
        raise CheckpointError(p, f"is a directory, expected a {what} checkpoint file")
    if trust:
        log.warning("%s: loading with full unpickling (trusted %s checkpoint): code in this file can run", p, what)
    try:
        return torch.load(p, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(p, f"not a readable {what} checkpoint (corrupt or not a torch file: "
                                     f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
        raise CheckpointError(p, f"not a readable {what} checkpoint: unsafe pickle refused ({_refusal_detail(exc)}); "
                                 "the file holds Python objects beyond tensors and plain containers, which could run "
                                 f"code when loaded, so it was not unpickled{unsafe_hint}") from exc
    except Exception as exc:  # truncated zip, foreign bytes: torch raises RuntimeError, KeyError, EOFError, ...
        first = (str(exc).splitlines() or [""])[0].split(". ")[0]  # torch appends paragraphs of generic advice
        raise CheckpointError(p, f"not a readable {what} checkpoint (corrupt, truncated or not a torch file: "
                                 f"{type(exc).__name__}: {first[:200]})") from exc


def _few(keys: Iterable[str], n: int = 5) -> str:
    keys = list(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return f"{keys[:n]}{more}"


def load_weights(model: nn.Module, state: Any, path: str | os.PathLike[str], what: str) -> nn.Module:
    """Load `state` into `model` strictly; a mismatch raises `CheckpointError` listing missing keys, unexpected
    keys, non-tensor values and shape mismatches (each with a few examples), naming `path` and `what`."""
    if not isinstance(state, Mapping):
        raise CheckpointError(path, f"weights do not fit the {what}: state_dict is a {type(state).__name__}, "
                                    "expected a mapping of tensors")
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in expected
              if isinstance(state.get(k), torch.Tensor) and state[k].shape != expected[k].shape]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("values that are not tensors", not_tensors), ("shape mismatches", shapes)):
        if items:
            problems.append(f"{label} ({len(items)}): {_few(items)}")
    if problems:
        raise CheckpointError(path, f"weights do not fit the {what}: {'; '.join(problems)}")
    model.load_state_dict(dict(state), strict=True)
    return model


__all__ = ["CheckpointError", "load_weights", "read_checkpoint"]
