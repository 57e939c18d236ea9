"""End to end through the CLI: train `tiny` for a few steps from real shards, separate a file, evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from flows.cli import cli
from models.separator.synthetic import synthetic_samples, write_tar_shard
from storage.audio import load_audio, write_audio

SMALL = ["--set", "separator.width=48", "--set", "separator.segment_s=1.0", "--set", "separator.batch_size=4",
         "--set", "separator.steps_per_epoch=3", "--set", "separator.max_epochs=2", "--set", "separator.threads=1"]


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_train_separate_evaluate(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    write_tar_shard(train_dir / "shard-000000.tar", list(synthetic_samples(30, seconds=1.5, seed=1, silent_every=5)))
    write_tar_shard(test_dir / "shard-000000.tar", list(synthetic_samples(6, seconds=1.5, seed=9)))
    ckpt = tmp_path / "sep.pt"

    res = _invoke(["train", "separator", "--shards", str(train_dir), "--out", str(ckpt), "-q", *SMALL])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["steps"] == 6 and ckpt.is_file()

    # one file longer than the training window: windowed inference must return the same length
    mix = next(iter(synthetic_samples(1, seconds=3.3, seed=4)))["mix"]
    wav_in, wav_out, resid = tmp_path / "in.wav", tmp_path / "out.flac", tmp_path / "res.flac"
    write_audio(wav_in, mix, 16000)
    res = _invoke(["separate", "--separator", str(ckpt), "--audio", str(wav_in), "--query", "whistle",
                   "--negative", "hiss", "--gate-threshold", "0", "--out", str(wav_out), "--residual", str(resid), "-q"])
    assert res.exit_code == 0, res.output
    out = load_audio(wav_out)
    assert np.abs(out).max() > 1e-4  # gate off: the mask output itself, not silence
    assert out.shape == mix.shape and np.isfinite(out).all()
    assert np.allclose(out + load_audio(resid), mix, atol=1e-4)

    report_path = tmp_path / "report.json"
    res = _invoke(["evaluate", "--separator", str(ckpt), "--test", str(test_dir), "--json", str(report_path), "-q"])
    assert res.exit_code == 0, res.output
    assert "OVERALL" in res.output and "absent-class queries" in res.output
    report = json.loads(report_path.read_text())
    assert report["overall"]["n"] == 6 and report["absent_queries"]["n"] == 6
    assert np.isfinite(report["overall"]["si_sdri"]) and set(report["per_class"]) <= {
        "low hum", "whistle", "hiss", "rumble", "ticking clock", "bird chirp"}


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    wav = tmp_path / "x.wav"
    write_audio(wav, np.zeros(16000, np.float32) + 0.01, 16000)
    res = CliRunner().invoke(cli, ["separate", "--separator", str(bad), "--audio", str(wav), "--query", "x", "--out", str(tmp_path / "o.wav")])
    assert res.exit_code == 2 and "bad.pt" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["train", "separator", "--shards", str(empty), "--out", str(tmp_path / "c.pt"), *SMALL])
    assert res.exit_code == 3 and "no .tar shards" in res.output
