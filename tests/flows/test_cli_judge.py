"""`stemforge train judge|pc` end to end on a tiny on-disk manifest (few steps: checks plumbing, files, exit codes)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from flows.cli import cli
from models.aesthetics import PCConfig, build_pc
from models.judge import JudgeConfig, build_judge
from storage.audio import write_audio
from storage.manifests import SOURCE_CLIP_SCHEMA, write_manifest

SR = 16000
FAST_JUDGE = ["--set", "judge.pretrain_steps=3", "--set", "judge.finetune_steps=4", "--set", "judge.train_batch=4",
              "--set", "judge.clip_seconds=1.0", "--set", "judge.eval_tuples=8", "--set", "judge.dim=16",
              "--set", "judge.heads=2", "--set", "judge.layers=1", "--set", "judge.device=cpu", "-q"]
FAST_PC = ["--set", "pc.steps=4", "--set", "pc.train_batch=4", "--set", "pc.clip_seconds=1.0",
           "--set", "pc.eval_mixtures=8", "--set", "pc.channels=16", "--set", "pc.device=cpu", "-q"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * SR)) / SR
    rows = []
    for label, f in (("dog", 400.0), ("siren", 900.0), ("engine", 90.0)):
        for i, split in enumerate(("train", "train", "test")):
            audio = (0.3 * np.sin(2 * np.pi * f * (1 + 0.05 * i) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
            path = root / f"{label}_{i}.flac"
            write_audio(path, audio, SR)
            rows.append(dict(clip_id=f"{label}_{i}", path=str(path), sample_rate=SR, num_frames=len(t),
                             duration_s=len(t) / SR, labels=[label], label_ids=[label], domain="sound", split=split,
                             content_hash=f"{label}{i}", dataset="test"))
    write_manifest(root / "manifests" / "sources", SOURCE_CLIP_SCHEMA, rows)
    return root / "manifests" / "sources"


def test_train_judge_writes_checkpoint_and_report(tmp_path: Path, manifest: Path) -> None:
    out = tmp_path / "judge.pt"
    res = CliRunner().invoke(cli, ["train", "judge", "--sources", str(manifest), "--out", str(out), *FAST_JUDGE])
    assert res.exit_code == 0, res.output
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["targets"] == "proxy" and report["holdout"].startswith("splits train vs ['test']")
    assert set(report["heldout"]["axes"]) == {"overall", "recall", "precision", "faithfulness"}
    scorer = build_judge(JudgeConfig(checkpoint=str(out), device="cpu"))
    mix = np.zeros((1, SR), np.float32) + 0.01
    assert set(scorer.score(mix, mix, ["a dog barking"], SR)) == {"overall", "recall", "precision", "faithfulness"}


def test_train_judge_with_human_ratings(tmp_path: Path, manifest: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        mix = (0.1 * rng.standard_normal(SR)).astype(np.float32)
        write_audio(tmp_path / f"m{i}.wav", mix, SR)
        write_audio(tmp_path / f"o{i}.wav", mix * 0.5, SR)
        rows.append({"mixture": f"m{i}.wav", "output": f"o{i}.wav", "text": "a dog barking", "overall": 1 + i * 0.5,
                     "recall": 3, "precision": 3, "faithfulness": 3})
    with open(tmp_path / "ratings.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "judge.pt"
    res = CliRunner().invoke(cli, ["train", "judge", "--sources", str(manifest), "--out", str(out),
                                   "--ratings", str(tmp_path / "ratings.csv"), *FAST_JUDGE])
    assert res.exit_code == 0, res.output
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["targets"] == "human" and report["rows"] == 6 and report["heldout"]["n"] == 2


def test_bad_ratings_and_bad_manifest_exit_with_data_error(tmp_path: Path, manifest: Path) -> None:
    (tmp_path / "r.csv").write_text("mixture,output\nx,y\n")
    res = CliRunner().invoke(cli, ["train", "judge", "--sources", str(manifest), "--out", str(tmp_path / "j.pt"),
                                   "--ratings", str(tmp_path / "r.csv"), *FAST_JUDGE])
    assert res.exit_code == 3 and "missing columns" in res.output
    assert not (tmp_path / "j.pt").exists()
    empty = tmp_path / "empty"
    write_manifest(empty, SOURCE_CLIP_SCHEMA, [])
    res = CliRunner().invoke(cli, ["train", "pc", "--sources", str(empty), "--out", str(tmp_path / "p.pt"), *FAST_PC])
    assert res.exit_code == 3 and "no source clips" in res.output


def test_train_pc_writes_checkpoint_and_report(tmp_path: Path, manifest: Path) -> None:
    out = tmp_path / "pc.pt"
    res = CliRunner().invoke(cli, ["train", "pc", "--sources", str(manifest), "--out", str(out), *FAST_PC])
    assert res.exit_code == 0, res.output
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["kind"] == "pc" and "single_clean_below_2.5" in report["heldout"]
    scores = build_pc(PCConfig(checkpoint=str(out), device="cpu")).score(np.full((2, SR), 0.01, np.float32), SR)
    assert scores.shape == (2,)
