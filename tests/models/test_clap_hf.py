"""The `hf` backend loads a tiny ClapModel + processor built offline here, through the real from_pretrained code."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.clap.base import build_clap
from models.clap.checkpoint import CheckpointError
from models.clap.config import ClapConfig

WORDS = "a dog barking the sound of rain falling piano playing siren wailing engine idling and in background".split()


def build_tiny_hf_clap(folder: Path, seed: int = 0) -> None:
    """A randomly initialised, very small HTSAT+RoBERTa CLAP with a byte-level BPE tokenizer trained on a few words."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapAudioConfig, ClapConfig as HFConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, ClapTextConfig, RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 3, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok_dir = folder / "tok"
    tok_dir.mkdir()
    bpe.save_model(str(tok_dir))
    tokenizer = RobertaTokenizer.from_pretrained(tok_dir)  # (the vocab_file= keyword is silently ignored in v5)
    assert tokenizer.vocab_size > 5, "tokenizer fell back to special tokens only"
    text = ClapTextConfig(vocab_size=tokenizer.vocab_size + 8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=37, max_position_embeddings=80, projection_dim=32)
    audio = ClapAudioConfig(spec_size=64, num_mel_bins=16, window_size=4, depths=[1, 1], num_attention_heads=[2, 2],
                            patch_embeds_hidden_size=16, hidden_size=32, projection_dim=32, num_hidden_layers=2)
    torch.manual_seed(seed)
    model = ClapModel(HFConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=32))
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=2, fft_window_size=1024, truncation="rand_trunc", padding="repeatpad")
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(folder)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hfclap") / "model"
    build_tiny_hf_clap(folder)
    return folder


def test_hf_backend_scores_offline(hf_folder: Path) -> None:
    torch.set_num_threads(1)
    scorer = build_clap(ClapConfig(backend="hf", checkpoint=str(hf_folder), batch_size=2))
    assert scorer.sample_rate == 48000
    info = scorer.info()
    assert info["backend"] == "hf" and info["version"].startswith("transformers-") and len(info["checkpoint_hash"]) == 16
    texts = ["a dog barking", "rain falling", "piano playing"]
    t = scorer.embed_text(texts)
    assert t.shape == (3, 32) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert np.abs(t[0] - t[1]).max() > 1e-3  # the tokenizer really distinguishes texts
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((3, 16000))).astype(np.float32)  # 16 kHz in, resampled to 48 kHz
    a = scorer.embed_audio(audio, 16000)
    assert a.shape == (3, 32) and np.abs(a[0] - a[1]).max() > 1e-4
    s = scorer.score(texts, audio, 16000)
    np.testing.assert_allclose(s, (t * a).sum(axis=1), atol=1e-5)
    # loading again gives the same numbers: weights come from the folder, not a fresh init
    again = build_clap(ClapConfig(backend="hf", checkpoint=str(hf_folder)))
    np.testing.assert_allclose(again.score(texts, audio, 16000), s, atol=1e-5)


def test_hf_backend_rejects_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="expects a folder"):
        build_clap(ClapConfig(backend="hf", checkpoint=str(tmp_path / "missing")))
    with pytest.raises(CheckpointError, match="no config.json"):
        build_clap(ClapConfig(backend="hf", checkpoint=str(tmp_path)))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot load"):
        build_clap(ClapConfig(backend="hf", checkpoint=str(tmp_path)))
