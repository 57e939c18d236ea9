"""`stemforge run`: first steps on a tiny demo corpus, resume by markers, --restart, config-change refusal."""
from __future__ import annotations

import json

from click.testing import CliRunner

from flows.cli import cli

TINY = [
    "--set", "corpus.demo.sources_per_class={train: 2, val: 1, test: 1}",
    "--set", "corpus.demo.scenes={train: 2, val: 1, test: 1}",
    "--set", "corpus.demo.classes=[dog, siren, piano, rain, bird, engine]",
    "--set", "corpus.demo.workers=1",
    "--set", "engine.synthetic_counts={train: 6, val: 2, test: 2}",
    "--quiet",
]


def _run(tmp_path, *args):
    return CliRunner().invoke(cli, ["run", "--out", str(tmp_path), "--name", "t", "--until", "synthetic", *TINY, *args],
                              catch_exceptions=False)


def test_run_until_synthetic_then_resume_and_restart(tmp_path):
    first = _run(tmp_path)
    assert first.exit_code == 0, first.output
    out = json.loads(first.output.strip().splitlines()[-1])
    assert out["stopped_after"] == "synthetic" and out["resumed_steps"] == []
    root = tmp_path / "t"
    assert (root / "steps" / "corpus.json").is_file() and (root / "steps" / "synthetic.json").is_file()
    marker = json.loads((root / "steps" / "synthetic.json").read_text())
    assert marker["outputs"]["counts"]["train"] == 6
    assert list((root / "synthetic" / "train").glob("*.tar"))
    assert (root / "config.resolved.yaml").is_file()

    again = _run(tmp_path)
    assert json.loads(again.output.strip().splitlines()[-1])["resumed_steps"] == ["corpus", "synthetic"]

    fresh = _run(tmp_path, "--restart")
    assert json.loads(fresh.output.strip().splitlines()[-1])["resumed_steps"] == []


def test_changed_config_is_refused_with_usage_exit(tmp_path):
    assert _run(tmp_path).exit_code == 0
    changed = CliRunner().invoke(cli, ["run", "--out", str(tmp_path), "--name", "t", "--until", "synthetic", *TINY,
                                       "--set", "engine.synthetic_counts={train: 7, val: 2, test: 2}"])
    assert changed.exit_code == 2
    assert "--restart" in changed.output


def test_run_help_lists_options():
    res = CliRunner().invoke(cli, ["run", "--help"])
    assert res.exit_code == 0 and "--restart" in res.output and "--until" in res.output


def test_submit_and_jobs_report_usage_and_unreachable_clusters():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nothing = CliRunner().invoke(cli, ["submit", "--address", f"http://127.0.0.1:{port}"])
    assert nothing.exit_code == 2 and "nothing to run" in nothing.output
    unreachable = CliRunner().invoke(cli, ["jobs", "list", "--address", f"http://127.0.0.1:{port}"])
    assert unreachable.exit_code == 1 and f"127.0.0.1:{port}" in unreachable.output
    res = CliRunner().invoke(cli, ["--help"])
    assert "submit" in res.output and "jobs" in res.output
