"""`stemforge shards inspect|verify` through the CLI: tables, JSON output, exit codes on damage."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import cli
from flows.common import EXIT_DATA, EXIT_OK
from storage.shards import ShardConfig, read_index, write_store
from toy_shards import SyntheticSamples

FACTORY = SyntheticSamples(seed=21, seconds=0.05)


def run(*args: str):
    return CliRunner().invoke(cli, ["shards", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli_store")
    write_store(out, FACTORY, 10, ShardConfig(max_count=4))
    return out


def test_help() -> None:
    for args in (["--help"], ["inspect", "--help"], ["verify", "--help"]):
        assert run(*args).exit_code == EXIT_OK


def test_inspect_prints_table_and_writes_json(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    result = run("inspect", str(store), "--json-out", str(out), "--samples", "2")
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(out.read_text())
    expected_labels: dict[str, int] = {}
    for i in range(10):
        for lab in FACTORY(i)["json"]["target_labels"]:
            expected_labels[lab] = expected_labels.get(lab, 0) + 1
    assert summary["num_samples"] == 10 and summary["num_shards"] == 3 and summary["complete"] is True
    assert summary["labels"] == expected_labels
    assert summary["hours"] == pytest.approx(10 * 0.05 / 3600)
    assert [s["key"] for s in summary["samples"]] == [FACTORY(0)["__key__"], FACTORY(1)["__key__"]]
    assert "samples" in result.output and "synthetic_noise" in result.output and FACTORY(0)["__key__"] in result.output


def test_inspect_foreign_tars_without_index(store: Path, tmp_path: Path) -> None:
    shutil.copytree(store, tmp_path / "s")
    shutil.rmtree(tmp_path / "s" / "index")
    out = tmp_path / "summary.json"
    assert run("inspect", str(tmp_path / "s"), "--json-out", str(out)).exit_code == EXIT_OK
    summary = json.loads(out.read_text())
    assert summary["source"] == "tars" and summary["num_samples"] == 10


def test_inspect_empty_dir_is_a_data_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["shards", "inspect", str(tmp_path)])
    assert result.exit_code == EXIT_DATA and "no shards" in result.output


def test_verify_healthy_then_corrupt(store: Path, tmp_path: Path) -> None:
    assert run("verify", str(store)).exit_code == EXIT_OK
    shutil.copytree(store, tmp_path / "s")
    row = read_index(tmp_path / "s").to_pylist()[5]
    i = row["members"].index(f"{row['key']}.mix.flac")
    path = tmp_path / "s" / row["shard"]
    data = bytearray(path.read_bytes())
    data[row["member_offsets"][i]:row["member_offsets"][i] + 64] = b"\0" * 64
    path.write_bytes(bytes(data))
    last = tmp_path / "s" / "shard-000002.tar"
    last.write_bytes(last.read_bytes()[:700])  # truncated inside the first member
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["shards", "verify", str(tmp_path / "s"), "--json-out", str(report_path)])
    assert result.exit_code == EXIT_DATA
    report = json.loads(report_path.read_text())
    members = {(p["shard"], p["member"]) for p in report["problems"]}
    assert (row["shard"], f"{row['key']}.mix.flac") in members
    assert any(p["shard"] == "shard-000002.tar" and "json" in p["member"] for p in report["problems"])
    assert report["ok"] is False
