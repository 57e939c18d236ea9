"""SAM Audio Judge adapter: used only with the `sam_audio` package and a local checkpoint folder; otherwise a clean
`BackendUnavailable` (this is the path every machine without the release takes, so it is tested, not skipped)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from models.judge import BackendUnavailable, JudgeConfig, build_judge
from models.judge.sam_adapter import SAM_RATE, _folder_hash


def test_sam_backend_unavailable_is_a_clean_error(tmp_path: Path) -> None:
    """Without the `sam_audio` package or a local folder the SAM adapter refuses cleanly (no crash, no download)."""
    with pytest.raises(BackendUnavailable, match="needs judge.checkpoint"):
        build_judge(JudgeConfig(backend="sam"))
    with pytest.raises(BackendUnavailable, match="does not exist"):
        build_judge(JudgeConfig(backend="sam", checkpoint=str(tmp_path / "missing")))
    folder = tmp_path / "sam-audio-judge"
    folder.mkdir()
    with pytest.raises(BackendUnavailable) as err:
        build_judge(JudgeConfig(backend="sam", checkpoint=str(folder)))
    if importlib.util.find_spec("sam_audio") is None:
        assert "'sam_audio' package is not installed" in str(err.value)
    else:  # package present but the folder holds no release: loading fails with the folder named
        assert str(folder) in str(err.value)


def test_folder_hash_tracks_weight_files(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "notes.txt").write_text("ignored")
    h1 = _folder_hash(tmp_path)
    (tmp_path / "notes.txt").write_text("changed")
    assert _folder_hash(tmp_path) == h1
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert _folder_hash(tmp_path) != h1
    assert SAM_RATE == 48_000
