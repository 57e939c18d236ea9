"""`stemforge train clap` trains a checkpoint from a manifest; `stemforge score --scorer clap` scores a shard store
into a Parquet table (joined by key on re-runs) and fails with the documented exit codes on bad input."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from flows.cli import cli
from models.clap.mini import MiniClap
from storage.audio import encode_audio
from storage.shards.store import write_store

_spec = importlib.util.spec_from_file_location("clap_fixtures_cli", Path(__file__).parents[1] / "models" / "clap_fixtures.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]

TRAIN_SET = ["--set", "clap.mini.channels=[32,32]", "--set", "clap.mini.text_hidden=64", "--set", "clap.mini.crop_seconds=0.5",
             "--set", "clap.mini.batch_size=16", "--set", "clap.mini.lr=0.003", "--set", "run.seed=3", "-q"]
LABELS = sorted(fx.PHRASES)


class Tuples:
    """Shard samples: target = one synthetic class, residual = another, prompt = the target's phrase."""

    def __call__(self, i: int) -> dict:
        rng = np.random.default_rng([7, i])
        sr, n = 16000, 16000
        a, b = LABELS[i % 3], LABELS[(i + 1) % 3]
        target, residual = fx.synth(a, rng, n, sr), fx.synth(b, rng, n, sr)
        key = f"t{i:05d}"
        return {"__key__": key, "mix.flac": encode_audio(target + residual, sr), "target.flac": encode_audio(target, sr),
                "residual.flac": encode_audio(residual, sr),
                "json": {"key": key, "sample_rate": sr, "num_frames": n, "duration_s": 1.0, "operator": "extract",
                         "prompt": fx.PHRASES[a], "positive_text": fx.PHRASES[a] if i != 5 else None, "negative_text": None}}


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_clap")
    manifest = fx.make_manifest(root, {"train": 5, "val": 2})
    ckpt = root / "out" / "clap_mini.pt"
    res = CliRunner().invoke(cli, ["train", "clap", "--sources", str(manifest), "--out", str(ckpt), "--steps", "80", *TRAIN_SET])
    assert res.exit_code == 0, res.output
    return ckpt


def test_train_clap_writes_checkpoint_with_summary(trained_ckpt: Path) -> None:
    model = MiniClap.load(trained_ckpt)
    assert model.meta["classes"] == LABELS and model.meta["steps"] == 80
    assert model.meta["val_zero_shot_top1"] >= 0.8
    assert not list(trained_ckpt.parent.glob(".*.tmp"))


def test_train_clap_bad_manifest(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["train", "clap", "--sources", str(tmp_path / "none"), "--out", str(tmp_path / "c.pt"), "-q"])
    assert res.exit_code == 3 and "source manifest directory not found" in res.output


def test_score_clap_table_and_merge(trained_ckpt: Path, tmp_path: Path) -> None:
    store = tmp_path / "shards"
    write_store(store, Tuples(), 12)
    table_path = tmp_path / "scores.parquet"
    args = ["score", "--scorer", "clap", "--shards", str(store), "--out", str(table_path), "--set", f"clap.checkpoint={trained_ckpt}", "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    t = pq.read_table(table_path).to_pydict()
    assert sorted(t["key"]) == [f"t{i:05d}" for i in range(12)]
    assert set(t["clap_backend"]) == {"mini"} and len(set(t["clap_checkpoint_hash"])) == 1
    tgt, res_ = np.array(t["clap_target"], dtype=float), np.array(t["clap_residual"], dtype=float)
    no_text = t["key"].index("t00005")
    assert np.isnan(tgt[no_text]) and np.isnan(res_[no_text])
    ok = np.isfinite(tgt)
    assert ok.sum() == 11 and (tgt[ok] > res_[ok]).mean() >= 0.9
    # a second run joins by key and replaces its own columns instead of duplicating rows or columns
    pq.write_table(pq.read_table(table_path).append_column("judge_overall", [[3.0] * 12]), table_path)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    t2 = pq.read_table(table_path)
    assert t2.num_rows == 12 and t2.column_names.count("clap_target") == 1 and "judge_overall" in t2.column_names


def test_score_errors(trained_ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["score", "--scorer", "clap", "--shards", str(tmp_path / "nope"), "--out", str(tmp_path / "s.parquet"), "-q"])
    assert res.exit_code == 3 and "shard store not found" in res.output
    store = tmp_path / "shards"
    write_store(store, Tuples(), 2)
    res = runner.invoke(cli, ["score", "--scorer", "clap", "--shards", str(store), "--out", str(tmp_path / "s.parquet"), "-q"])
    assert res.exit_code == 2 and "clap.checkpoint is required" in res.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = runner.invoke(cli, ["score", "--scorer", "clap", "--shards", str(store), "--out", str(tmp_path / "s.parquet"), "--checkpoint", str(bad), "-q"])
    assert res.exit_code == 3 and "bad.pt: not a readable" in res.output
    assert not (tmp_path / "s.parquet").exists()


def test_score_judge_and_pc_join_into_one_table(trained_ckpt: Path, tmp_path: Path) -> None:
    """All three scorers write into one table keyed by sample (judge/pc: helper F's mini models, untrained weights
    saved by their own save functions, so only the plumbing is asserted, not score quality)."""
    from engine.run_config import load
    from models.aesthetics.train import build_model as build_pc_model, save_pc
    from models.judge.train import build_model as build_judge_model, save_judge

    cfg = load()
    save_judge(tmp_path / "judge.pt", build_judge_model(cfg.judge), cfg.judge)
    save_pc(tmp_path / "pc.pt", build_pc_model(cfg.pc), cfg.pc)
    store = tmp_path / "shards"
    write_store(store, Tuples(), 6)
    table = tmp_path / "scores.parquet"
    runner = CliRunner()
    for name, ckpt in (("clap", trained_ckpt), ("judge", tmp_path / "judge.pt"), ("pc", tmp_path / "pc.pt")):
        res = runner.invoke(cli, ["score", "--scorer", name, "--shards", str(store), "--out", str(table), "--checkpoint", str(ckpt),
                                  "--device", "cpu", "-q"])
        assert res.exit_code == 0, res.output
    t = pq.read_table(table).to_pydict()
    assert len(t["key"]) == 6
    for col in ("clap_target", "judge_overall", "judge_faithfulness", "pc_target", "pc_mix"):
        assert np.isfinite(np.array(t[col], dtype=float)).sum() >= 5, col
    assert set(t["judge_backend"]) == {"mini"} and set(t["pc_backend"]) == {"mini"} and set(t["clap_backend"]) == {"mini"}
    # the judge is asked with positive_text like the engine's filter step (t00005 has a prompt but no positive_text)
    judge = np.array(t["judge_overall"], dtype=float)
    assert np.isnan(judge[t["key"].index("t00005")]) and np.isfinite(judge[0])
    bad = tmp_path / "judge_bad.pt"
    bad.write_bytes(b"garbage")
    res = runner.invoke(cli, ["score", "--scorer", "judge", "--shards", str(store), "--out", str(table), "--checkpoint", str(bad), "-q"])
    assert res.exit_code == 3 and "judge_bad.pt" in res.output


@pytest.mark.timeout(300)
def test_score_under_ray_equals_in_process(trained_ckpt: Path, tmp_path: Path, ray_local) -> None:
    """`engine.backend: ray` runs the same stages in a Ray actor and writes the same table; --limit cuts samples."""
    store = tmp_path / "shards"
    write_store(store, Tuples(), 12)
    tables = {}
    for backend in ("inprocess", "ray"):
        out = tmp_path / f"{backend}.parquet"
        res = CliRunner().invoke(cli, ["score", "--scorer", "clap", "--shards", str(store), "--out", str(out), "--limit", "7",
                                       "--set", f"clap.checkpoint={trained_ckpt}", "--set", f"engine.backend={backend}", "-q"])
        assert res.exit_code == 0, res.output
        tables[backend] = pq.read_table(out).to_pydict()
    assert tables["ray"] == tables["inprocess"] and len(tables["ray"]["key"]) == 7
