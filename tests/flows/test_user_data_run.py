"""The engine on a user's own data: `stemforge run` pointed at an imported corpus and an evaluation set of real
mixtures with their stems, by config only (no code), with and without stems.

The test writes real audio files itself (soundfile WAVs of six synthesised sound classes with distinct timbres):
an FSD50K-style dataset (single-label clips become clean sources, multi-label clips natural scenes; AudioSet MIDs
and the shipped ontology) and a `stems` evaluation set (one folder per mixture: mixture.wav + <label>.wav).
Budgets are the tiny preset's, so figures mean nothing; what is tested is where they come from.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from engine.run_config import load as load_config
from flows.cycle import stemforge_run

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
SR = 16000
# AudioSet leaf classes (name, MID) as FSD50K writes them
CLASSES = [("Bark", "/m/05tny_"), ("Meow", "/m/07qrkrw"), ("Thunder", "/m/0ngt1"), ("Knock", "/m/07r4wb8"),
           ("Applause", "/m/028ght"), ("Cough", "/m/01b_21")]


def _sound(name: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A few seconds of a class with its own timbre (so a separator has something to learn)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = np.zeros(n, np.float32)
    if name == "Bark":  # band-limited noise bursts
        for start in rng.uniform(0, seconds - 0.3, 4):
            i = int(start * SR)
            burst = rng.standard_normal(int(0.15 * SR)) * np.hanning(int(0.15 * SR))
            x[i:i + len(burst)] += np.convolve(burst, np.ones(8) / 8, "same")[: n - i]
    elif name == "Meow":  # frequency sweeps
        f0 = rng.uniform(500, 800)
        x += 0.5 * np.sin(2 * np.pi * (f0 + 300 * np.sin(2 * np.pi * 0.7 * t)) * t) * (np.sin(np.pi * t / seconds) ** 2)
    elif name == "Thunder":  # low rumble
        x += np.convolve(rng.standard_normal(n), np.ones(200) / 20, "same") * np.linspace(1, 0.2, n)
    elif name == "Knock":  # clicks
        for start in rng.uniform(0, seconds - 0.05, 6):
            i = int(start * SR)
            x[i:i + 400] += np.exp(-np.arange(400) / 40.0) * np.sin(2 * np.pi * 180 * np.arange(400) / SR)
    elif name == "Applause":  # dense random clicks
        x += (rng.random(n) < 0.02) * rng.standard_normal(n) * 0.8
    else:  # Cough: noisy harmonic bursts
        for start in rng.uniform(0, seconds - 0.4, 3):
            i = int(start * SR)
            m = int(0.3 * SR)
            x[i:i + m] += (np.sin(2 * np.pi * 220 * np.arange(m) / SR) + 0.5 * rng.standard_normal(m)) * np.hanning(m)
    return (0.3 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def write_fsd50k(root: Path, rng: np.random.Generator) -> Path:
    """ground_truth/dev.csv (train/val) + eval.csv (test), audio under FSD50K.{dev,eval}_audio/."""
    rows = {"dev": [], "eval": []}
    fid = 0
    for kind, split, per_class, scenes in (("dev", "train", 4, 4), ("dev", "val", 1, 2), ("eval", None, 1, 2)):
        folder = root / f"FSD50K.{kind}_audio"
        folder.mkdir(parents=True, exist_ok=True)
        for name, mid in CLASSES:
            for _ in range(per_class):
                fid += 1
                sf.write(folder / f"{fid}.wav", _sound(name, 4.0, rng), SR, subtype="PCM_16")
                rows[kind].append({"fname": fid, "labels": name, "mids": mid, "split": split})
        for s in range(scenes * 3):
            fid += 1
            picks = [CLASSES[i] for i in rng.choice(len(CLASSES), 2, replace=False)]
            mix = sum(_sound(name, 8.0, rng) for name, _ in picks)
            sf.write(folder / f"{fid}.wav", (0.7 * mix).astype(np.float32), SR, subtype="PCM_16")
            rows[kind].append({"fname": fid, "labels": ",".join(n for n, _ in picks),
                               "mids": ",".join(m for _, m in picks), "split": split})
    gt = root / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    for kind, items in rows.items():
        with open(gt / f"{kind}.csv", "w", newline="") as fh:
            cols = ["fname", "labels", "mids"] + (["split"] if kind == "dev" else [])
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(items)
    return root


def write_stems(root: Path, rng: np.random.Generator, count: int = 8) -> Path:
    """One folder per mixture: mixture.wav (the exact sum) and one <label>.wav per source."""
    for k in range(count):
        folder = root / f"mix{k:02d}"
        folder.mkdir(parents=True)
        picks = [CLASSES[i][0] for i in rng.choice(len(CLASSES), 2, replace=False)]
        stems = {name: _sound(name, 6.0, rng) for name in picks}
        for name, audio in stems.items():
            sf.write(folder / f"{name.lower()}.wav", audio, SR, subtype="FLOAT")
        sf.write(folder / "mixture.wav", sum(stems.values()).astype(np.float32), SR, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("userdata")
    rng = np.random.default_rng(7)
    return write_fsd50k(base / "fsd", rng), write_stems(base / "stems", rng)


def _cfg(overrides: list[str]):
    return load_config(TINY, ["engine.backend=inprocess", "corpus.kind=manifests", *overrides])


@pytest.mark.timeout(900)
def test_run_on_imported_corpus_with_stems_evaluates_against_the_imported_stems(datasets, tmp_path):
    fsd, stems = datasets
    cfg = _cfg([f"corpus.data.root={fsd}", "corpus.data.layout=fsd50k", f"corpus.eval.root={stems}",
                "corpus.eval.layout=stems"])
    report = stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(tmp_path), name="own")
    root = tmp_path / "own"
    corpus = json.loads((root / "steps" / "corpus.json").read_text())["outputs"]
    assert corpus["kind"] == "manifests" and corpus["eval_audit"] and "eval" in corpus["eval_audit"]
    # the natural figures are against the imported stems: every evaluated query is a mixture of the stems set
    ev = json.loads((root / "steps" / "evaluate_1.json").read_text())["outputs"]
    assert ev["natural_truth"] is True and ev["natural_items"] > 0
    from storage.manifests import iter_rows

    eval_test = {r["clip_id"] for r in iter_rows(corpus["eval_scenes"]) if r["split"] == "test"}
    asked = {key.rsplit("/", 1)[0] for key in ev["natural_item_sdri"]}
    assert asked and asked <= eval_test, (sorted(asked), sorted(eval_test))
    for it in report["iterations"]:
        assert it["natural_sdri_db"] is not None and it["label_free"] is None
    # the final separator and judge: a loadable release whose model card matches the run
    final = report["final"]
    card = json.loads(Path(final["files"]["model_card.json"]).read_text())
    assert card["config_hash"] == report["config_hash"]
    assert [r["separator_hash"] for r in card["iterations"]] == [r["separator_hash"] for r in report["iterations"]]
    from models.separator.infer import Separator
    from models.weights import weights_hash

    sep = Separator.load(final["files"]["separator.pt"], "cpu")
    assert weights_hash(final["files"]["separator.pt"])[:16] == card["separator"]["weights_hash"]
    assert card["judge"]["targets"] == "proxy" and "PROXY" in (root / "final" / "model_card.md").read_text()
    for tier, d in card["data"]["tiers"].items():
        assert d["index_hash"], tier
    out = sep.separate([np.zeros(SR, np.float32)], SR, ["bark"])
    assert out[0].shape == (SR,)


@pytest.mark.timeout(900)
def test_run_without_stems_reports_label_free_figures(datasets, tmp_path):
    fsd, _ = datasets
    cfg = _cfg([f"corpus.data.root={fsd}", "corpus.data.layout=fsd50k", "engine.final.enabled=false"])
    report = stemforge_run(config=cfg.model_dump(mode="json"), out_root=str(tmp_path), name="nostems")
    for it in report["iterations"]:
        assert it["natural_sdri_db"] is None and it["natural_truth"] is False
        free = it["label_free"]
        assert free["true_sdr"].startswith("unavailable") and free["scenes"] > 0 and free["re_sdr_mean_db"] is not None
    assert "re_sdr on the val scenes" in report["headline"]["stopped"]["reason"]
    assert "True SDR is unavailable" in Path(report["files"]["md"]).read_text()
    assert "final" not in report


def test_corpus_kind_errors_name_the_problem(tmp_path):
    from storage.configio import ConfigError

    with pytest.raises(ConfigError, match="corpus.data"):
        load_config(TINY, ["corpus.kind=manifests"])
    with pytest.raises(ConfigError, match="exactly one of"):
        load_config(TINY, ["corpus.kind=manifests", f"corpus.data.path={tmp_path}", f"corpus.data.root={tmp_path}"])
    cfg = _cfg([f"corpus.data.path={tmp_path}"])
    from flows.cli import cli

    res = CliRunner().invoke(cli, ["run", "--config", TINY, "--set", "engine.backend=inprocess", "--set",
                                   "corpus.kind=manifests", "--set", f"corpus.data.path={tmp_path}",
                                   "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2 and f"{tmp_path}: not an imported corpus" in res.output, res.output
    assert cfg.corpus.data.path == str(tmp_path)
