"""Human ratings: load a Parquet/CSV table and fine-tune the judge on it (SAJ's MAE + MSE on 1-5 scores).

This path is deliberately separate from `proxy_ratings`: it never invents targets. Expected columns:

    mixture, output, text, overall, recall, precision, faithfulness

`mixture`/`output` are audio paths (relative paths resolve against the table's folder); ratings are on 1-5.
Every problem (missing column, rating out of range, unreadable audio) raises `RatingsError` naming the file and,
where it applies, the row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.judge.config import JudgeConfig
from models.judge.model import AXES, MiniJudge
from models.judge.train import correlations, finetune_ratings, predict
from storage.audio import AudioConfig, AudioError, load_audio
from storage.errors import reconstructible

COLUMNS = ("mixture", "output", "text") + AXES


@reconstructible
class RatingsError(ValueError):
    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


@dataclass
class Ratings:
    mixtures: list[np.ndarray]
    outputs: list[np.ndarray]
    texts: list[str]
    scores: np.ndarray  # [N, 4] ordered as AXES

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> "Ratings":
        return Ratings([self.mixtures[i] for i in idx], [self.outputs[i] for i in idx],
                       [self.texts[i] for i in idx], self.scores[idx])


def read_table(path: str | Path):
    """Parquet (.parquet/.pq) or CSV into a pyarrow Table with the required columns."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise RatingsError(path, "ratings file does not exist")
    try:
        table = pq.read_table(path) if path.suffix.lower() in {".parquet", ".pq"} else pacsv.read_csv(path)
    except Exception as exc:
        raise RatingsError(path, f"cannot read ratings table ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise RatingsError(path, f"missing columns {missing}; expected {list(COLUMNS)}")
    if table.num_rows == 0:
        raise RatingsError(path, "ratings table has no rows")
    return table


def load_ratings(path: str | Path, sample_rate: int) -> Ratings:
    """Read the table and its audio (resampled to `sample_rate`)."""
    path = Path(path)
    table = read_table(path)
    cols = {c: table.column(c).to_pylist() for c in COLUMNS}
    cfg = AudioConfig(sample_rate=sample_rate, allow_silent=True, min_duration_s=0.05)
    mixes, outs, texts, scores = [], [], [], []
    for i in range(table.num_rows):
        row = []
        for a in AXES:
            v = cols[a][i]
            if v is None or not np.isfinite(float(v)) or not 1.0 <= float(v) <= 5.0:
                raise RatingsError(path, f"row {i}: {a}={v!r} is not a rating in [1, 5]")
            row.append(float(v))
        pair = []
        for c in ("mixture", "output"):
            p = Path(str(cols[c][i]))
            p = p if p.is_absolute() else path.parent / p
            try:
                pair.append(load_audio(p, cfg))
            except AudioError as exc:
                raise RatingsError(path, f"row {i}: {c}: {exc}") from exc
        mixes.append(pair[0])
        outs.append(pair[1])
        texts.append(str(cols["text"][i] or ""))
        scores.append(row)
    return Ratings(mixes, outs, texts, np.asarray(scores, dtype=np.float32))


def _crop_pair(mix: np.ndarray, out: np.ndarray, n: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Same excerpt of mixture and output (random start when `rng`, else the beginning), zero-padded to `n`."""
    length = max(len(mix), len(out))
    start = int(rng.integers(0, length - n + 1)) if rng is not None and length > n else 0
    res = []
    for a in (mix, out):
        seg = np.zeros(n, np.float32)
        part = a[start:start + n]
        seg[: len(part)] = part
        res.append(seg)
    return res[0], res[1]


def ratings_batch(r: Ratings, rng: np.random.Generator, n: int, batch: int):
    idx = rng.integers(0, len(r), size=batch)
    pairs = [_crop_pair(r.mixtures[i], r.outputs[i], n, rng) for i in idx]
    return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), [r.texts[i] for i in idx], r.scores[idx])


def split_ratings(r: Ratings, holdout: float, seed: int) -> tuple[Ratings, Ratings]:
    """Row-level train/held-out split (held-out gets at least 2 rows when there are >= 4)."""
    order = np.random.default_rng(seed).permutation(len(r))
    k = max(2, int(round(len(r) * holdout))) if len(r) >= 4 else 0
    return r.subset(np.sort(order[k:])), r.subset(np.sort(order[:k]))


def finetune_human(model: MiniJudge, train: Ratings, cfg: JudgeConfig, device: torch.device, steps: int | None = None,
                   on_step=None) -> list[dict]:
    """Fine-tune on human ratings with the same MAE + MSE loop as the proxy path."""
    n = int(cfg.clip_seconds * cfg.sample_rate)
    return finetune_ratings(model, lambda rng: ratings_batch(train, rng, n, cfg.train_batch),
                            steps if steps is not None else cfg.finetune_steps, cfg, device, on_step)


def evaluate_human(model: MiniJudge, held: Ratings, cfg: JudgeConfig, device: torch.device) -> dict:
    """PCC/SRCC per axis on held-out human-rated rows (first `clip_seconds` of each, as scored in training)."""
    n = int(cfg.clip_seconds * cfg.sample_rate)
    pairs = [_crop_pair(m, o, n, None) for m, o in zip(held.mixtures, held.outputs)]
    pred = predict(model, np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), held.texts, device)
    return {"n": len(held), "axes": correlations(pred, held.scores)}
