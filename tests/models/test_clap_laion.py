"""The `laion` backend runs laion-clap's real module-building code fully offline against a cache and checkpoint
built here (in a subprocess: HF_HOME must be set before transformers is first imported)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def laion_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("laion")
    env = {**os.environ, "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("laion_offline_check.py")), str(root)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_laion_checkpoint_loads_offline_and_matches_reference(laion_result: dict) -> None:
    r = laion_result
    assert r["text_shape"] == [3, 512] and r["audio_shape"] == [2, 512]
    assert r["text_max_diff_vs_ref"] < 1e-4  # a module with another seed reproduces the checkpoint's embeddings
    assert r["audio_max_diff_vs_ref"] < 1e-3
    assert r["text_pair_diff"] > 1e-3  # the cached tokenizer is real: different texts embed differently
    assert r["score_vs_dot"] < 1e-5 and all(-1.0 <= s <= 1.0 for s in r["scores"])
    assert r["info"]["backend"] == "laion" and r["info"]["version"].startswith("laion_clap-1.1") and len(r["info"]["checkpoint_hash"]) == 16


def test_laion_bad_checkpoints_fail_clearly(laion_result: dict) -> None:
    errors = laion_result["errors"]
    assert "corrupt.pt: not a readable laion-clap checkpoint" in errors["corrupt"]
    assert "foreign.pt: not a laion-clap checkpoint" in errors["foreign"]
    assert "missing.pt: laion-clap checkpoint not found" in errors["missing"]
