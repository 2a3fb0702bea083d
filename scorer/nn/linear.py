"""A linear model over idf-weighted n-grams, fitted on its own after training and blended in.

The wide path (``scorer.nn.wide``) learns beside the LSTM for as many epochs as the LSTM needs; a
linear model fitted to convergence with its own regularization, as a TF-IDF + logistic
regression baseline is, does better on small data (README, *Model quality*: ``blend-*``). This
path holds such a model in a form the exported graph computes from the same token ids:

* unigrams (a ``[V, K]`` table) and bigrams of adjacent words hashed into ``buckets`` rows
  (``scorer.nn.ngrams``, the one definition of the features), whitespace tokens left out
  of both;
* each position weighted by its feature's idf (zero for features the training rows hold fewer
  than twice, for ``<pad>`` and ``<unk>``), the rows of the tables holding weight times idf;
* the sum divided by the root of the summed squared idfs over the review's positions: TF-IDF's
  L2 norm where no feature repeats, and no op has to count repeats.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from scorer.nn.ngrams import hashed_pairs
from scorer.nn.wide import WideNgrams

IDF_SCALE = 16.0


class IdfNgrams(WideNgrams):
    """The same two tables as the wide path, read with idf weights and a TF-IDF norm."""

    def __init__(self, vocab_size: int, buckets: int, outputs: int) -> None:
        super().__init__(vocab_size, buckets, outputs)
        # Buffers, saved with the weights: what a position weighs, and which tokens are words.
        self.register_buffer("unigram_idf", torch.zeros(vocab_size))
        self.register_buffer("bigram_idf", torch.zeros(buckets))
        self.register_buffer("word", torch.zeros(vocab_size))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, K] logits (``lengths`` already clamped to [1, T])."""
        ids = ids.long()
        time = torch.arange(ids.shape[1], device=ids.device)[None, :]
        real = (time < lengths[:, None]).to(torch.float32)
        words = self.word[ids] * real
        pairs = hashed_pairs(ids, self.buckets)
        both = words * F.pad(words[:, 1:], (0, 1))  # [B, T], as the pairs
        # Squares of idf / 16: 800 positions of idf 10 sum to 80,000 otherwise, past fp16's
        # largest value (65,504) in a half-precision graph.
        unigram_idf = self.unigram_idf[ids] * real / IDF_SCALE
        bigram_idf = self.bigram_idf[pairs] * both / IDF_SCALE
        square = (unigram_idf * unigram_idf).sum(dim=1) + (bigram_idf * bigram_idf).sum(dim=1)
        # A review without one known feature scores zero here, not NaN.
        norm = IDF_SCALE * torch.sqrt(torch.clamp(square, min=1e-12))[:, None]
        total = (self.unigram(ids) * real[:, :, None]).sum(dim=1)
        total = total + (self.bigram(pairs) * both[:, :, None]).sum(dim=1)
        return total / norm
