"""The n-gram features, defined once: which tokens are words, the words at each position
(unigrams), and adjacent word pairs hashed into buckets (bigrams). The wide path
(``scorer.nn.wide``) and the blended linear path (``scorer.nn.linear``) compute them in the
graph from token ids (torch, here ``hashed_pairs``); the linear path's fit
(``scorer.train.ngram_fit``) reads them as sparse positions (numpy, here ``positions``).
Both use ``pair_bucket``'s integer arithmetic, so the exported graph computes what the fit saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from scorer.text.vocab import PAD_ID, UNK_ID

PRIME = 1_000_003


def pair_bucket(first, second, buckets: int):
    """The bucket of the pair (first, second): ``(a * PRIME + b) mod buckets``, for numpy
    arrays and torch tensors alike (int64 ids: no overflow for vocabularies below 2**43; in
    torch ``%`` is ``remainder``, which ONNX exports as ``Mod``)."""
    return (first * PRIME + second) % buckets


def hashed_pairs(ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """[B, T]: the bucket of each pair of adjacent ids, the last id paired with ``<pad>``.

    That last pair is never a real one (callers mask it), but it keeps the pair axis as long as
    the time axis: with one token the pair axis would be empty, and onnxruntime's CUDA provider
    refuses to sum over an empty axis (the CPU provider sums it to zero)."""
    padded = F.pad(ids, (0, 1), value=PAD_ID)
    return pair_bucket(padded[:, :-1], padded[:, 1:], buckets)


def word_mask(tokens: Sequence[str]) -> np.ndarray:
    """Which vocabulary ids are words (features): not whitespace tokens, ``<pad>`` or ``<unk>``."""
    word = np.array([not t.isspace() for t in tokens])
    word[[PAD_ID, UNK_ID]] = False
    return word


@dataclass(frozen=True)
class Positions:
    """The features at each position of n reviews: (row, column) pairs, columns being
    unigram ids, then ``V +`` bigram buckets."""

    rows: np.ndarray
    columns: np.ndarray
    n: int


def positions(ids: np.ndarray, lengths: np.ndarray, word: np.ndarray, buckets: int) -> Positions:
    """Each review's words (unigrams) and pairs of adjacent words (bigrams), as positions."""
    n, steps = ids.shape
    ids = ids.astype(np.int64)
    lengths = np.clip(lengths, 1, steps)
    real = np.arange(steps)[None, :] < lengths[:, None]
    words = real & word[ids]
    r1, c1 = np.nonzero(words)
    pairs = pair_bucket(ids[:, :-1], ids[:, 1:], buckets)
    r2, c2 = np.nonzero(words[:, :-1] & words[:, 1:])
    vocab = len(word)
    return Positions(
        np.concatenate([r1, r2]), np.concatenate([ids[r1, c1], vocab + pairs[r2, c2]]), n
    )
