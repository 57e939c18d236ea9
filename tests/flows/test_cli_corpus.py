"""`stemforge corpus demo|import` end to end through the CLI: help, exit codes, files written, config errors."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

from flows.cli import cli
from flows.common import EXIT_DATA, EXIT_OK, EXIT_USAGE
from storage import manifests as mf

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("corpus_fixtures", REPO / "tests" / "pipelines" / "corpus_fixtures.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]
TINY = ["--set", "corpus.demo.classes=[dog, piano, siren, rain]", "--set", "corpus.demo.source_seconds=1.0",
        "--set", "corpus.demo.scene_seconds=2.0", "--set", "corpus.demo.event_seconds=[0.8,1.2]",
        "--set", "corpus.demo.sources_per_class={train: 1, val: 1, test: 0}",
        "--set", "corpus.demo.scenes={train: 2, val: 0, test: 1}", "--set", "corpus.demo.workers=1",
        "--set", "engine.backend=inprocess"]  # Ray vs in-process bytes: tests/pipelines/test_demo_corpus.py


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_entry_point_help_lists_corpus() -> None:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "corpus" in proc.stdout and "Generate the demo corpus" in proc.stdout


def test_every_corpus_command_has_help() -> None:
    for args in (["corpus", "--help"], ["corpus", "demo", "--help"], ["corpus", "import", "--help"]):
        result = run(*args)
        assert result.exit_code == EXIT_OK, result.output
        assert "Usage:" in result.output
    assert "--quiet" in run("corpus", "demo", "--help").output
    assert "esc50|fsd50k|audioset|folders" in run("corpus", "import", "--help").output


def test_demo_writes_corpus_resolved_config_and_is_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run("corpus", "demo", "--out", str(out), "--seed", "4", "--quiet", *TINY)
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == ""  # results go to files, logs to stderr
    summary = json.loads((out / "corpus.json").read_text())
    assert summary["seed"] == 4 and summary["counts"]["sources"] == {"train": 4, "val": 4, "test": 0}
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["run"]["seed"] == 4 and resolved["corpus"]["demo"]["scene_seconds"] == 2.0
    assert len(list(mf.iter_rows(out / "manifests" / "scenes", expect="natural_scene"))) == 3
    first = {p.name: p.read_bytes() for p in out.rglob("*.flac")}
    again = run("corpus", "demo", "--out", str(out), "--seed", "4", "--quiet", *TINY)  # regenerate in place
    assert again.exit_code == EXIT_OK
    assert {p.name: p.read_bytes() for p in out.rglob("*.flac")} == first


def test_demo_progress_and_logging_on_stderr(tmp_path: Path) -> None:
    result = run("corpus", "demo", "--out", str(tmp_path / "d"), *TINY)
    assert result.exit_code == EXIT_OK
    assert "demo corpus" in result.stderr and result.stdout == ""
    quiet = run("corpus", "demo", "--out", str(tmp_path / "q"), "-q", *TINY)
    assert "demo corpus" not in quiet.stderr


def test_demo_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = run("corpus", "demo", "--out", str(tmp_path), "-q", *TINY)
    assert result.exit_code == EXIT_USAGE and "refusing" in result.stderr


def test_config_errors_exit_2_with_key_path_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus:\n  demo:\n    scenes: {train: lots}\n")
    result = run("corpus", "demo", "--out", str(tmp_path / "o"), "--config", str(bad))
    assert result.exit_code == EXIT_USAGE
    assert str(bad) in result.stderr and "corpus.demo.scenes.train" in result.stderr
    unknown = run("corpus", "demo", "--out", str(tmp_path / "o"), "--set", "corpus.demo.colour=red")
    assert unknown.exit_code == EXIT_USAGE and "corpus.demo.colour" in unknown.stderr
    assert not (tmp_path / "o").exists()
    usage = run("corpus", "demo")
    assert usage.exit_code == EXIT_USAGE and "--out" in usage.output
    classes = run("corpus", "demo", "--out", str(tmp_path / "o"), "--set", "corpus.demo.classes=[unicorn]")
    assert classes.exit_code == EXIT_USAGE and "unicorn" in classes.stderr


def make_esc50(root: Path, good: int, bad: bool = True) -> None:
    (root / "audio").mkdir(parents=True)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(good):
        x = (0.2 * np.sin(2 * np.pi * (300 + 50 * i) * np.arange(16000) / 16000)).astype(np.float32)
        sf.write(root / "audio" / f"1-{i}-A-0.wav", x, 16000)
        lines.append(f"1-{i}-A-0.wav,{i % 5 + 1},0,dog,True,{i},A")
    if bad:
        (root / "audio" / "bad.wav").write_bytes(b"garbage")
        lines.append("bad.wav,1,0,dog,True,0,A")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")


def test_import_cli_reports_and_is_idempotent(tmp_path: Path) -> None:
    root, out = tmp_path / "ESC-50", tmp_path / "corpus"
    make_esc50(root, good=3)
    result = run("corpus", "import", "--layout", "esc50", "--root", str(root), "--out", str(out))
    assert result.exit_code == EXIT_OK, result.output
    assert "imported     3" in result.stderr and "unreadable" in result.stderr
    report = json.loads((out / "import_report.json").read_text())
    assert report["counts"]["imported"] == 3 and report["counts"]["quarantined_by_kind"] == {"unreadable": 1}
    assert (out / "config.resolved.yaml").is_file()
    again = run("corpus", "import", "--layout", "esc50", "--root", str(root), "--out", str(out), "-q")
    assert again.exit_code == EXIT_OK
    assert again.stderr == "" and again.stdout == ""  # --quiet: no table, no progress bar
    report = json.loads((out / "import_report.json").read_text())
    assert report["counts"]["imported"] == 0 and report["counts"]["duplicate"] == 3


def test_import_cli_limit_and_seed(tmp_path: Path) -> None:
    root = tmp_path / "ESC-50"
    make_esc50(root, good=4, bad=False)
    result = run("corpus", "import", "--layout", "esc50", "--root", str(root), "--out", str(tmp_path / "o"), "--limit", "2", "-q")
    assert result.exit_code == EXIT_OK
    assert json.loads((tmp_path / "o" / "import_report.json").read_text())["counts"]["candidates"] == 2


def test_import_cli_exit_codes_for_unusable_data(tmp_path: Path) -> None:
    root = tmp_path / "ESC-50"
    make_esc50(root, good=0)
    result = run("corpus", "import", "--layout", "esc50", "--root", str(root), "--out", str(tmp_path / "o"), "-q")
    assert result.exit_code == EXIT_DATA and "no usable clip" in result.stderr
    assert json.loads((tmp_path / "o" / "import_report.json").read_text())["counts"]["quarantined"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    missing_meta = run("corpus", "import", "--layout", "esc50", "--root", str(empty), "--out", str(tmp_path / "o2"))
    assert missing_meta.exit_code == EXIT_DATA
    assert f"{empty.resolve() / 'audio'}: not found (esc50 layout expects audio/ and meta/esc50.csv)" in missing_meta.stderr
    no_root = run("corpus", "import", "--layout", "esc50", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o3"))
    assert no_root.exit_code == EXIT_USAGE
    bad_layout = run("corpus", "import", "--layout", "musdb", "--root", str(empty), "--out", str(tmp_path / "o4"))
    assert bad_layout.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    "layout,build,sources,scenes,quarantined",
    [
        ("esc50", fx.make_esc50, 3, 0, 8),
        ("fsd50k", fx.make_fsd50k, 2, 1, 1),
        ("audioset", fx.make_audioset, 3, 1, 3),
        ("folders", fx.make_folders, 3, 0, 1),
    ],
)
def test_import_cli_every_layout(tmp_path: Path, layout: str, build, sources: int, scenes: int, quarantined: int) -> None:
    root, out = tmp_path / "data", tmp_path / "corpus"
    root.mkdir()
    build(root)
    result = run("corpus", "import", "--layout", layout, "--root", str(root), "--out", str(out), "-q")
    assert result.exit_code == EXIT_OK, result.output
    counts = json.loads((out / "import_report.json").read_text())["counts"]
    assert (counts["imported_sources"], counts["imported_scenes"], counts["quarantined"]) == (sources, scenes, quarantined)
    assert len(list(mf.iter_rows(out / "manifests" / "sources", expect="source_clip"))) == sources
    assert yaml.safe_load((out / "config.resolved.yaml").read_text())["corpus"]["importer"]["batch_rows"] == 1000


def test_import_cli_stems_layout(tmp_path: Path) -> None:
    root, out = tmp_path / "evalset", tmp_path / "corpus"
    fx.make_stems(root)
    result = run("corpus", "import", "--layout", "stems", "--root", str(root), "--out", str(out))
    assert result.exit_code == EXIT_OK, result.output
    assert "audit stems  5 (mixtures: 1 sum, 1 not_sum at 30 dB)" in result.stderr
    report = json.loads((out / "import_report.json").read_text())
    assert report["counts"]["imported_scenes"] == 2 and report["counts"]["quarantined"] == 3
    assert mf.count_rows(out / "manifests" / "audit") == 5
    empty = tmp_path / "no-mixtures"
    (empty / "song").mkdir(parents=True)
    bad = run("corpus", "import", "--layout", "stems", "--root", str(empty), "--out", str(tmp_path / "o"))
    assert bad.exit_code == EXIT_DATA and f"{empty.resolve() / 'song'}/mixture.<ext>: not found" in bad.stderr
    helptext = run("corpus", "import", "--help").output
    assert "stem_<label>.<ext>" in helptext and "mixture.<ext> (or mix.<ext>)" in helptext and "not_sum" in helptext


def test_registry_reports_absent_command_module_clearly() -> None:
    import click

    from flows.cli import _resolve

    with pytest.raises(click.ClickException, match="flows.cli_not_there is missing"):
        _resolve("flows.cli_not_there:cmd")
    assert _resolve("flows.cli_corpus:corpus").name == "corpus"
