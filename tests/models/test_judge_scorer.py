"""The judge as a batch scorer: checkpoint round trip, provenance, bad checkpoints, input validation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.judge import JudgeConfig, build_judge
from models.judge.checkpoint import CheckpointError, save_checkpoint
from models.judge.model import AXES
from models.judge.train import build_model, save_judge

SR = 16000
SMALL = dict(dim=32, heads=2, layers=1)


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = JudgeConfig(**SMALL)
    path = tmp_path / "judge.pt"
    save_judge(path, build_model(cfg), cfg)
    return path


def test_round_trip_scores_match_the_in_memory_model(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    cfg = JudgeConfig(**SMALL)
    model = build_model(cfg).eval()
    sha = save_judge(tmp_path / "j.pt", model, cfg)
    scorer = build_judge(JudgeConfig(checkpoint=str(tmp_path / "j.pt"), device="cpu"))
    info = scorer.info()
    assert info == {"backend": "mini", "checkpoint_hash": sha, "version": "stemforge.judge.mini v1"}
    mix = (0.1 * rng.standard_normal((5, SR))).astype(np.float32)
    out = mix * 0.3
    res = scorer.score(mix, out, ["a dog barking"] * 5, SR)
    assert set(res) == set(AXES)
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(mix), torch.from_numpy(out), ["a dog barking"] * 5)
    for j, a in enumerate(AXES):
        assert res[a].shape == (5,) and res[a].dtype == np.float32
        assert np.allclose(res[a], ref[:, j].numpy(), atol=1e-5)
        assert ((res[a] >= 1) & (res[a] <= 5)).all()


def test_batching_and_resampling_are_consistent(ckpt: Path, rng: np.random.Generator) -> None:
    scorer = build_judge(JudgeConfig(checkpoint=str(ckpt), device="cpu", batch_size=2))
    mix = (0.1 * rng.standard_normal((5, 32000))).astype(np.float32)
    whole = scorer.score(mix, mix * 0.5, list("abcde"), 32000)
    scorer.batch_size = 16
    again = scorer.score(list(mix), list(mix * 0.5), list("abcde"), 32000)
    for a in AXES:
        assert np.allclose(whole[a], again[a], atol=1e-5)


def test_bad_inputs_raise_clear_errors(ckpt: Path) -> None:
    scorer = build_judge(JudgeConfig(checkpoint=str(ckpt), device="cpu"))
    x = np.zeros((2, SR), np.float32)
    with pytest.raises(ValueError, match="batch sizes differ"):
        scorer.score(x, x, ["only one"], SR)
    bad = x.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match=r"outputs\[0\].*NaN"):
        scorer.score(x, bad, ["a", "b"], SR)


def test_missing_corrupt_and_foreign_checkpoints_fail_naming_the_file(tmp_path: Path, ckpt: Path) -> None:
    with pytest.raises(CheckpointError, match="no judge checkpoint configured"):
        build_judge(JudgeConfig())
    with pytest.raises(CheckpointError, match="does not exist"):
        build_judge(JudgeConfig(checkpoint=str(tmp_path / "nope.pt")))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pt: not a readable torch checkpoint"):
        build_judge(JudgeConfig(checkpoint=str(trunc)))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a stemforge checkpoint"):
        build_judge(JudgeConfig(checkpoint=str(foreign)))
    other = tmp_path / "pc.pt"
    save_checkpoint(other, "stemforge.pc.mini", 1, {}, {})
    with pytest.raises(CheckpointError, match="format is 'stemforge.pc.mini', expected 'stemforge.judge.mini'"):
        build_judge(JudgeConfig(checkpoint=str(other)))
    wrong = tmp_path / "wrong.pt"
    cfg = JudgeConfig(**SMALL)
    state = build_model(JudgeConfig(dim=16, heads=2, layers=1)).state_dict()
    save_checkpoint(wrong, "stemforge.judge.mini", 1, {k: getattr(cfg, k) for k in
                    ("sample_rate", "n_mels", "hop", "dim", "heads", "layers", "text_vocab", "max_text_tokens")}, state)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        build_judge(JudgeConfig(checkpoint=str(wrong)))
    future = tmp_path / "future.pt"
    save_checkpoint(future, "stemforge.judge.mini", 99, {}, {})
    with pytest.raises(CheckpointError, match="unsupported .* version 99"):
        build_judge(JudgeConfig(checkpoint=str(future)))


def test_text_form_decides_whether_other_labels_are_read(tmp_path: Path, rng: np.random.Generator) -> None:
    """A proxy-trained judge (form "target") ignores `others`; one saved as "target+others" reads them exactly as
    `models.judge.prompt.judge_text` writes them; an unknown form is refused naming the checkpoint."""
    from models.judge.prompt import compose_texts, judge_text

    torch.manual_seed(0)
    cfg = JudgeConfig(**SMALL)
    model = build_model(cfg).eval()
    save_judge(tmp_path / "plain.pt", model, cfg)
    save_judge(tmp_path / "ctx.pt", model, cfg, meta={"text_form": "target+others"})
    save_judge(tmp_path / "bad.pt", model, cfg, meta={"text_form": "captions"})
    mix = (0.1 * rng.standard_normal((2, SR))).astype(np.float32)
    texts, others = ["a dog barking"] * 2, [["siren", "rain"], ["bass_guitar"]]
    plain = build_judge(JudgeConfig(checkpoint=str(tmp_path / "plain.pt"), device="cpu"))
    ctx = build_judge(JudgeConfig(checkpoint=str(tmp_path / "ctx.pt"), device="cpu"))
    assert plain.text_form == "target" and ctx.text_form == "target+others"
    a, b = plain.score(mix, mix * 0.3, texts, SR), plain.score(mix, mix * 0.3, texts, SR, others=others)
    assert np.array_equal(a["overall"], b["overall"])
    told = ctx.score(mix, mix * 0.3, texts, SR, others=others)
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(mix), torch.from_numpy(mix * 0.3),
                       ["a dog barking without siren, rain", "a dog barking without bass guitar"])
    assert np.allclose(told["overall"], ref[:, 0].numpy(), atol=1e-5)
    assert not np.allclose(told["overall"], a["overall"], atol=1e-6)
    assert judge_text("a dog barking", ["", "siren", "siren"]) == "a dog barking without siren"
    assert compose_texts("target+others", texts, None) == texts
    with pytest.raises(ValueError, match="2 texts but 1"):
        compose_texts("target+others", texts, [["x"]])
    with pytest.raises(ValueError, match="bad.pt.*captions"):
        build_judge(JudgeConfig(checkpoint=str(tmp_path / "bad.pt"), device="cpu"))


def test_others_in_matches_labels_by_slug() -> None:
    from models.judge.prompt import others_in

    assert others_in(["dog", "alarm clock", "rain"], ["alarm_clock"]) == ["dog", "rain"]
    assert others_in(None, ["dog"]) == [] and others_in(["siren"], None) == ["siren"]
