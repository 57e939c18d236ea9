"""Text query encoders for the separator.

The separator is conditioned on `[positive; negative]` text embeddings. Two backends satisfy the `TextEncoder`
protocol:

- `HashTextEncoder`: deterministic and training-free. Each word and each character trigram of a word (with
  boundary marks, so "dogs" and "dog" share most trigrams) is hashed to a fixed pseudo-random Gaussian vector; the
  embedding is their L2-normalised sum. It needs no weights, never downloads anything, and gives every distinct
  label or phrase a distinct, stable query, so a separator trained on label texts works out of the box. It does not
  know synonyms: "puppy yapping" is not near "dog barking" (that is what the CLAP text tower is for).
- the in-project CLAP's text tower (`clap:<checkpoint>`), loaded lazily from `models.clap.mini.MiniClap`.
"""
from __future__ import annotations

import hashlib
import re
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps texts to L2-normalised vectors of a fixed dimension."""

    dim: int

    def embed(self, texts: list[str]) -> torch.Tensor:
        """`[N, dim]` float32, each row L2-normalised."""
        ...


_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    toks = [f"w:{w}" for w in words]
    for w in words:
        padded = f"<{w}>"
        toks.extend(f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2))
    return toks


class HashTextEncoder:
    """Hashed word + char-trigram bag projected by a fixed seeded random matrix (see module docstring)."""

    def __init__(self, dim: int = 256, seed: int = 0, word_weight: float = 2.0):
        if dim <= 0:
            raise ValueError(f"HashTextEncoder dim must be positive, got {dim}")
        self.dim = dim
        self.seed = seed
        self.word_weight = word_weight
        self._cache: dict[str, np.ndarray] = {}

    def _token_vector(self, token: str) -> np.ndarray:
        vec = self._cache.get(token)
        if vec is None:
            digest = hashlib.blake2b(f"{self.seed}:{token}".encode(), digest_size=8).digest()
            vec = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(self.dim)
            self._cache[token] = vec
        return vec

    def embed(self, texts: list[str]) -> torch.Tensor:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text query #{i} is {type(text).__name__}, expected str")
            toks = _tokens(text)
            if not toks:
                raise ValueError(f"text query #{i} {text!r} has no letters or digits to encode")
            for tok in toks:
                out[i] += (self.word_weight if tok.startswith("w:") else 1.0) * self._token_vector(tok)
            out[i] /= np.linalg.norm(out[i]) + 1e-12
        return torch.from_numpy(out.astype(np.float32))

    def spec(self) -> str:
        return f"hash:{self.dim}:{self.seed}"


def load_text_encoder(spec: str) -> TextEncoder:
    """Build an encoder from a spec string recorded in separator checkpoints.

    - ``"hash"`` or ``"hash:<dim>[:<seed>]"``: `HashTextEncoder`.
    - ``"clap:<checkpoint path>"``: the in-project CLAP's text tower (``MiniClap.load(path).text_encoder()``).
    """
    kind, _, rest = spec.partition(":")
    if kind == "hash":
        parts = [p for p in rest.split(":") if p]
        try:
            dim = int(parts[0]) if parts else 256
            seed = int(parts[1]) if len(parts) > 1 else 0
        except ValueError as exc:
            raise ValueError(f"bad text encoder spec {spec!r}: expected hash[:dim[:seed]]") from exc
        return HashTextEncoder(dim=dim, seed=seed)
    if kind == "clap":
        if not rest:
            raise ValueError(f"bad text encoder spec {spec!r}: expected clap:<checkpoint path>")
        from pathlib import Path

        if not Path(rest).is_file():
            raise FileNotFoundError(f"{rest}: CLAP checkpoint for the text encoder does not exist")
        from models.clap.mini import MiniClap  # lazy: written by the CLAP module, heavy

        return SpecTagged(MiniClap.load(rest).text_encoder(), spec)
    raise ValueError(f"unknown text encoder spec {spec!r}: use 'hash[:dim[:seed]]' or 'clap:<checkpoint path>'")


class SpecTagged:
    """An encoder plus the spec string that rebuilds it, so checkpoints can record `clap:<path>`."""

    def __init__(self, encoder: TextEncoder, spec: str):
        self.encoder = encoder
        self.dim = encoder.dim
        self._spec = spec

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self.encoder.embed(texts)

    def spec(self) -> str:
        return self._spec


def encoder_spec(encoder: TextEncoder) -> str:
    """The spec string that rebuilds `encoder` (recorded in checkpoints)."""
    spec = getattr(encoder, "spec", None)
    if callable(spec):
        return str(spec())
    return f"{type(encoder).__module__}.{type(encoder).__name__}:{encoder.dim}"


class CachedQueries:
    """Embeds each unique text once (training sees the same few labels millions of times)."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str | None]) -> torch.Tensor:
        """`[N, dim]`; `None` or empty text gives the zero vector (a missing query side)."""
        missing = sorted({t for t in texts if t and t not in self._cache})
        if missing:
            for t, v in zip(missing, self.encoder.embed(missing)):
                self._cache[t] = v.float()
        zero = torch.zeros(self.encoder.dim)
        return torch.stack([self._cache[t] if t else zero for t in texts]) if texts else torch.zeros(0, self.encoder.dim)
