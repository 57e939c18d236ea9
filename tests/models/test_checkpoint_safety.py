"""Tampered checkpoints fail with a message naming the file and the problem, and a pickle payload never runs.

Every model family's real loading entry point (the one the CLI and the engine call) gets small checkpoints built
here and then tampered with: a pickled payload whose `__reduce__` would create a file (through `os.system`,
`builtins.exec` and `builtins.open`; first shown to fire under a full unpickle), renamed / dropped / extra keys, a
wrong shape, a non-tensor value, a truncated file. The payload's marker file must never appear.
"""
from __future__ import annotations

import ast
import builtins
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from models.aesthetics import PCConfig, build_pc
from models.aesthetics.train import build_model as build_pc_model, save_pc
from models.checkpoint_io import CheckpointError, read_checkpoint
from models.clap.config import MiniClapTrainConfig
from models.clap.laion import read_laion_state_dict
from models.clap.mini import MiniClap
from models.judge import JudgeConfig, build_judge
from models.judge.train import build_model as build_judge_model, save_judge
from models.separator.infer import Separator
from models.weights import weights_hash
from separator_data import untrained_checkpoint

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this calls `how` with `marker` in it: a file appears if (and only if) the payload ran."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = str(marker), how

    def __reduce__(self) -> tuple[Any, ...]:
        if self.how == "os.system":
            return os.system, (f"touch {self.marker}",)
        if self.how == "exec":
            return builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",)
        return builtins.open, (self.marker, "w")


PAYLOADS = ("os.system", "exec", "open")


def _raw(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = _raw(src)
    edit(data)
    torch.save(data, dst)
    return dst


# -- small real checkpoints of every family, and how the project loads each -----------------------------------------

def _separator(d: Path) -> Path:
    return untrained_checkpoint(d / "separator.pt", width=16)


def _judge(d: Path) -> Path:
    torch.manual_seed(0)
    cfg = JudgeConfig(dim=16, heads=2, layers=1)
    save_judge(d / "judge.pt", build_judge_model(cfg), cfg)
    return d / "judge.pt"


def _pc(d: Path) -> Path:
    torch.manual_seed(0)
    cfg = PCConfig(channels=8)
    save_pc(d / "pc.pt", build_pc_model(cfg), cfg)
    return d / "pc.pt"


def _clap(d: Path) -> Path:
    torch.manual_seed(0)
    cfg = MiniClapTrainConfig(channels=[8, 8], text_hidden=16, embed_dim=16, text_buckets=64, n_mels=16)
    MiniClap(cfg, ["dog", "bark", "rain"]).save(d / "clap.pt")
    return d / "clap.pt"


# name -> (build, load as the project does, the key of the state dict inside the file)
FAMILIES: dict[str, tuple[Callable[[Path], Path], Callable[[Path], Any], str]] = {
    "separator": (_separator, lambda p: Separator.load(p, "cpu"), "state_dict"),
    "judge": (_judge, lambda p: build_judge(JudgeConfig(checkpoint=str(p), device="cpu")), "state_dict"),
    "pc": (_pc, lambda p: build_pc(PCConfig(checkpoint=str(p), device="cpu")), "state_dict"),
    "clap": (_clap, lambda p: MiniClap.load(p), "state_dict"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {name: build(d) for name, (build, _, _) in FAMILIES.items()}


def test_the_payload_is_real_under_a_full_unpickle(tmp_path: Path) -> None:
    """Guard for the test itself: each payload does create its file when something unpickles it fully."""
    for how in PAYLOADS:
        marker = tmp_path / f"ran-{how}"
        torch.save({"x": Payload(marker, how)}, tmp_path / "p.pt")
        torch.load(tmp_path / "p.pt", weights_only=False)
        assert marker.exists(), how


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_untampered_checkpoints_load(family: str, built: dict[str, Path]) -> None:
    FAMILIES[family][1](built[family])
    assert weights_hash(built[family])


@pytest.mark.parametrize("how", PAYLOADS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_pickle_payload_is_refused_and_never_runs(family: str, how: str, built: dict[str, Path], tmp_path: Path) -> None:
    _, load, key = FAMILIES[family]
    marker = tmp_path / "pwned"
    cases = {
        "in-metadata.pt": lambda d: d.update(extra=Payload(marker, how)),
        "as-a-weight.pt": lambda d: d[key].update({next(iter(d[key])): Payload(marker, how)}),
    }
    targets = [_rewrite(built[family], tmp_path / name, edit) for name, edit in cases.items()]
    legacy = tmp_path / "legacy-format.pt"  # torch's pre-zip serialisation
    torch.save({**_raw(built[family]), "extra": Payload(marker, how)}, legacy, _use_new_zipfile_serialization=False)
    bare = tmp_path / "plain-pickle.pt"  # not a torch file at all: a bare pickle stream
    with open(bare, "wb") as fh:
        pickle.dump({"format": "x", "extra": Payload(marker, how)}, fh, protocol=2)
    for path in [*targets, legacy, bare]:
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: not a readable .* unsafe pickle refused "
                                                  r"\(it references the global (posix\.system|exec|io\.open)"):
            load(path)
        with pytest.raises(CheckpointError, match="unsafe pickle refused"):
            weights_hash(path)  # lineage hashing reads checkpoints too
        assert not marker.exists(), f"{path.name}: the payload ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_protocol_4_pickle_is_refused_before_any_opcode_runs(built: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "proto4.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Payload(marker, "os.system")}, fh, protocol=4)
    with pytest.raises(CheckpointError, match=r"proto4\.pt: .*unsafe pickle refused \(it uses pickle opcode"):
        FAMILIES["judge"][1](path)
    assert not marker.exists()


def _rename_first(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        first = next(iter(d[key]))
        d[key][first + "_renamed"] = d[key].pop(first)
    return edit


def _drop_last(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d[key].pop(list(d[key])[-1])


def _extra(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d[key].update({"injected.weight": torch.zeros(3)})


def _reshape(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        name = next(k for k, v in d[key].items() if v.ndim >= 1 and v.numel() > 1)
        d[key][name] = torch.zeros(d[key][name].numel() + 1)
    return edit


def _not_tensor(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d[key].update({next(iter(d[key])): [1.0, 2.0]})


TAMPERS: dict[str, tuple[Callable[[str], Callable[[dict[str, Any]], None]], str]] = {
    "renamed key": (_rename_first, r"weights do not fit the .*missing keys \(1\): \[.*unexpected keys \(1\): \['.*_renamed'\]"),
    "dropped key": (_drop_last, r"weights do not fit the .*missing keys \(1\): \['"),
    "extra key": (_extra, r"weights do not fit the .*unexpected keys \(1\): \['injected.weight'\]"),
    "wrong shape": (_reshape, r"weights do not fit the .*shape mismatches \(1\): \['.*: file \(\d+,\) vs model \("),
    "not a tensor": (_not_tensor, r"weights do not fit the .*values that are not tensors \(1\): \['"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_wrong_keys_and_shapes_name_the_file_and_the_keys(family: str, tamper: str, built: dict[str, Path],
                                                          tmp_path: Path) -> None:
    _, load, key = FAMILIES[family]
    make, pattern = TAMPERS[tamper]
    path = _rewrite(built[family], tmp_path / f"{tamper.replace(' ', '-')}.pt", make(key))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: {pattern}"):
        load(path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_truncated_missing_and_directory_name_the_file(family: str, built: dict[str, Path], tmp_path: Path) -> None:
    load = FAMILIES[family][1]
    cut = tmp_path / "cut.pt"
    cut.write_bytes(built[family].read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(cut))}: not a readable .*corrupt, truncated"):
        load(cut)
    with pytest.raises(CheckpointError, match=r"gone\.pt: checkpoint not found"):
        load(tmp_path / "gone.pt")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"dir\.pt: is a directory"):
        load(tmp_path / "dir.pt")


@pytest.fixture(scope="module")
def last_pt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[dict]]:
    """A real trainer `last.pt` (2 steps of the tiny separator) with the streams to resume it on."""
    from models.separator.config import SeparatorConfig
    from models.separator.data import ShardSource
    from models.separator.train import train_separator
    from separator_data import synthetic_samples, write_samples

    d = tmp_path_factory.mktemp("trainer")
    write_samples(d / "train", list(synthetic_samples(8, seconds=1.0, seed=1)))
    stream, val = ShardSource([d / "train"]), list(synthetic_samples(2, seconds=1.0, seed=2))
    cfg = SeparatorConfig(width=16, segment_s=0.5, batch_size=2, steps_per_epoch=2, threads=1, max_steps=2)
    train_separator(cfg, [(stream, 1.0)], val, d / "run")
    return d / "run" / "last.pt", (cfg, stream), val


def _resume(run: Path, cfg_stream: Any, val: list[dict]) -> None:
    from models.separator.train import train_separator

    cfg, stream = cfg_stream
    train_separator(cfg.model_copy(update={"max_steps": 3}), [(stream, 1.0)], val, run)


def _param_groups(d: dict[str, Any]) -> None:
    d["train_state"]["optimizer"]["param_groups"] = []


TRAINER_TAMPERS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "payload": (lambda d: d["train_state"].update(extra=Payload(Path(d["_marker"]), "os.system")),
                r"unsafe pickle refused \(it references the global posix\.system"),
    "weights": (_reshape("state_dict"), r"weights do not fit the separator preset 'tiny': shape mismatches \(1\)"),
    "optimizer": (_param_groups, r"train_state does not fit this model's optimiser/scheduler: ValueError"),
    "state keys": (lambda d: d["train_state"].pop("scheduler"), r"train_state lacks \['scheduler'\]"),
    "state type": (lambda d: d.update(train_state=[1, 2]), r"field 'train_state' is a list, expected a mapping"),
}


@pytest.mark.parametrize("tamper", sorted(TRAINER_TAMPERS))
def test_a_tampered_trainer_resume_file_is_refused(tamper: str, last_pt: tuple[Path, Any, list[dict]],
                                                   tmp_path: Path) -> None:
    last, cfg_stream, val = last_pt
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    edit, pattern = TRAINER_TAMPERS[tamper]

    def apply(d: dict[str, Any]) -> None:
        d["_marker"] = str(marker)
        edit(d)
        d.pop("_marker")

    _rewrite(last, run / "last.pt", apply)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(run / 'last.pt'))}: .*{pattern}"):
        _resume(run, cfg_stream, val)
    assert not marker.exists()


def test_the_untampered_trainer_resume_file_resumes(last_pt: tuple[Path, Any, list[dict]], tmp_path: Path) -> None:
    last, cfg_stream, val = last_pt
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(last.read_bytes())
    _resume(run, cfg_stream, val)
    assert _raw(run / "last.pt")["train_state"]["step"] == 3


def test_laion_and_audiobox_readers_refuse_payloads(built: dict[str, Path], tmp_path: Path) -> None:
    """The external-release readers: laion-clap always weights-only; audiobox weights-only unless trusted."""
    from models.aesthetics.audiobox import AudioboxPCScorer

    marker = tmp_path / "pwned"
    evil = tmp_path / "release.pt"
    torch.save({"state_dict": {"audio_branch.w": torch.zeros(1), "text_branch.w": torch.zeros(1)},
                "epoch": Payload(marker, "exec")}, evil)
    with pytest.raises(CheckpointError, match=r"release\.pt: not a readable laion-clap checkpoint: unsafe pickle"):
        read_laion_state_dict(evil)
    with pytest.raises(CheckpointError, match=r"release\.pt: not a readable audiobox-aesthetics checkpoint: unsafe "
                                              r"pickle refused .*set pc\.trust_checkpoint=true"):
        AudioboxPCScorer(str(evil), "cpu")
    assert not marker.exists()


def test_trust_is_full_unpickling_and_only_audiobox_asks_for_it(tmp_path: Path) -> None:
    """`trust=True` is the documented exception (docs/SECURITY.md): it does unpickle everything, which is why the
    only call site that may pass it is the audiobox reader behind `pc.trust_checkpoint`."""
    marker = tmp_path / "ran"
    torch.save({"x": Payload(marker, "open")}, tmp_path / "trusted.pt")
    read_checkpoint(tmp_path / "trusted.pt", "trusted", trust=True)
    assert marker.exists()
    loads, trusts = [], []
    for sub in ("models", "engine", "flows", "pipelines", "storage"):
        for py in sorted((ROOT / sub).rglob("*.py")):
            rel = str(py.relative_to(ROOT))
            for node in ast.walk(ast.parse(py.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
                if owner in ("torch", "pickle") and func.attr in ("load", "loads"):
                    loads.append(rel)
                kw = {k.arg: k.value for k in node.keywords}
                if "trust" in kw and not (isinstance(kw["trust"], ast.Constant) and kw["trust"].value is False):
                    trusts.append(rel)
    # engine/executors/ray_data.py unpickles its own in-memory batch payloads (never a file): not a checkpoint
    assert sorted(loads) == ["engine/executors/ray_data.py", "models/checkpoint_io.py"], \
        f"checkpoint loads outside models/checkpoint_io.read_checkpoint: {loads}"
    assert trusts == ["models/aesthetics/audiobox.py"], f"full unpickling asked for outside the audiobox reader: {trusts}"
