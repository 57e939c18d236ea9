"""Run in a fresh interpreter by test_clap_laion.py (HF_HOME must be set before transformers is imported).

Builds an offline Hugging Face cache holding a tiny random roberta-base (byte-level BPE tokenizer trained on a
few words, 1 layer, hidden 768 as laion's projection expects), builds a laion-clap HTSAT-tiny module, saves its
weights as a checkpoint, then loads that checkpoint through stemforge's `laion` backend in a module initialised
with a different seed. Prints one JSON object with the measurements the test asserts on.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(sys.argv[1])
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORDS = "a dog barking the sound of rain falling piano playing siren wailing engine idling and in background".split()


def build_roberta_cache() -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel

    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--roberta-base"
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 3, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(snap))
    cfg = RobertaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                        intermediate_size=64, max_position_embeddings=80, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    RobertaModel(cfg).save_pretrained(snap)


def main() -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    build_roberta_cache()
    import laion_clap

    from models.clap.base import build_clap
    from models.clap.checkpoint import CheckpointError
    from models.clap.config import ClapConfig

    torch.manual_seed(0)
    ref = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
    state = ref.model.state_dict()
    # laion's own loader deletes this key unconditionally; real 630k checkpoints carry it
    state["text_branch.embeddings.position_ids"] = torch.arange(80).unsqueeze(0)
    ckpt = ROOT / "tiny-630k.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, ckpt)

    texts = ["a dog barking", "rain falling", "piano playing"]
    rng = np.random.default_rng(0)
    audio16 = (0.1 * rng.standard_normal((2, 16000 * 3))).astype(np.float32)

    torch.manual_seed(1)  # a different init: equal outputs prove the checkpoint was loaded
    scorer = build_clap(ClapConfig(backend="laion", checkpoint=str(ckpt), batch_size=2))
    t = scorer.embed_text(texts)
    a = scorer.embed_audio(audio16, 16000)
    ref.eval()
    with torch.inference_mode():
        t_ref = torch.nn.functional.normalize(ref.get_text_embedding(texts, use_tensor=True), dim=-1).numpy()
    import torchaudio.functional as AF

    audio48 = AF.resample(torch.from_numpy(audio16), 16000, 48000).numpy()
    a_ref = ref.get_audio_embedding_from_data(x=np.clip(audio48, -1, 1), use_tensor=False)
    a_ref = a_ref / np.linalg.norm(a_ref, axis=1, keepdims=True)
    scores = scorer.score(texts[:2], audio16, 16000)

    errors = {}
    corrupt = ROOT / "corrupt.pt"
    corrupt.write_bytes(ckpt.read_bytes()[:4096])
    foreign = ROOT / "foreign.pt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, foreign)
    for name, path in (("corrupt", corrupt), ("foreign", foreign), ("missing", ROOT / "missing.pt")):
        try:
            build_clap(ClapConfig(backend="laion", checkpoint=str(path)))
            errors[name] = None
        except CheckpointError as exc:
            errors[name] = str(exc)
    print(json.dumps({
        "text_shape": list(t.shape), "audio_shape": list(a.shape),
        "text_max_diff_vs_ref": float(np.abs(t - t_ref).max()), "audio_max_diff_vs_ref": float(np.abs(a - a_ref).max()),
        "text_pair_diff": float(np.abs(t[0] - t[1]).max()), "scores": scores.tolist(),
        "score_vs_dot": float(np.abs(scores - (t[:2] * a).sum(axis=1)).max()), "info": scorer.info(), "errors": errors,
    }))


if __name__ == "__main__":
    main()
