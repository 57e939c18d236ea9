"""Human-ratings path: table loading (Parquet and CSV), validation errors, and fine-tuning on the ratings."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from models.judge.config import JudgeConfig
from models.judge.human_ratings import (COLUMNS, RatingsError, evaluate_human, finetune_human, load_ratings,
                                        split_ratings)
from models.judge.model import AXES
from models.judge.train import build_model
from storage.audio import write_audio

SR = 16000


def make_rated(tmp_path: Path, rng: np.random.Generator, n: int = 24) -> list[dict]:
    """Rows whose 'human' rating is a known function of the audio: output gain relative to the mixture."""
    rows = []
    t = np.arange(SR) / SR
    for i in range(n):
        mix = (0.2 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.02 * rng.standard_normal(SR)).astype(np.float32)
        g = float(rng.uniform(0.0, 1.0))
        out = (mix * g).astype(np.float32) if g > 0.02 else (0.001 * rng.standard_normal(SR)).astype(np.float32)
        write_audio(tmp_path / f"m{i}.flac", mix, SR)
        write_audio(tmp_path / f"o{i}.flac", out, SR)
        score = 1 + 4 * g
        rows.append({"mixture": f"m{i}.flac", "output": str(tmp_path / f"o{i}.flac"), "text": "a tone",
                     **{a: score for a in AXES}})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return path


def test_loads_parquet_and_csv_alike(tmp_path: Path, rng: np.random.Generator) -> None:
    rows = make_rated(tmp_path, rng, n=4)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    a = load_ratings(tmp_path / "r.parquet", SR)
    b = load_ratings(write_csv(tmp_path / "r.csv", rows), SR)
    assert len(a) == len(b) == 4 and a.scores.shape == (4, 4)
    assert np.allclose(a.scores, b.scores) and np.allclose(a.mixtures[2], b.mixtures[2])
    assert a.texts == ["a tone"] * 4


def test_validation_errors_name_file_and_row(tmp_path: Path, rng: np.random.Generator) -> None:
    rows = make_rated(tmp_path, rng, n=3)
    with pytest.raises(RatingsError, match="does not exist"):
        load_ratings(tmp_path / "none.csv", SR)
    bad = [dict(r) for r in rows]
    bad[1]["recall"] = 7
    with pytest.raises(RatingsError, match=r"bad.csv: row 1: recall=7"):
        load_ratings(write_csv(tmp_path / "bad.csv", bad), SR)
    gone = [dict(r) for r in rows]
    gone[2]["output"] = "missing.flac"
    with pytest.raises(RatingsError, match=r"gone.csv: row 2: output: .*missing.flac"):
        load_ratings(write_csv(tmp_path / "gone.csv", gone), SR)
    pq.write_table(pa.Table.from_pylist([{"mixture": "x", "text": "y"}]), tmp_path / "cols.parquet")
    with pytest.raises(RatingsError, match=r"cols.parquet: missing columns \['output', 'overall'"):
        load_ratings(tmp_path / "cols.parquet", SR)


def test_finetune_on_human_ratings_learns_them(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.set_num_threads(1)
    table = load_ratings(write_csv(tmp_path / "r.csv", make_rated(tmp_path, rng, n=30)), SR)
    train, held = split_ratings(table, 0.2, 0)
    assert len(held) == 6 and len(train) == 24
    cfg = JudgeConfig(dim=32, heads=2, layers=1, clip_seconds=1.0, train_batch=16, lr=3e-3)
    model = build_model(cfg)
    history = finetune_human(model, train, cfg, torch.device("cpu"), steps=60)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    res = evaluate_human(model, held, cfg, torch.device("cpu"))
    assert res["n"] == 6 and res["axes"]["overall"]["pcc"] > 0.7
