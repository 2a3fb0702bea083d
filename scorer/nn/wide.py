"""The wide half of a wide-and-deep model: a linear bag of word unigrams and hashed bigrams.

Trained jointly with the LSTM (its output is added to the LSTM head's logits), it learns what
a TF-IDF + logistic-regression model learns, quickly and from few examples, while the LSTM
learns order and context. It reads the same token ids as the LSTM: a unigram is a row of a
``[V, K]`` table, and each pair of adjacent ids hashes to a row of a ``[buckets, K]`` table
(``scorer.nn.ngrams``: plain integer arithmetic, so the exported graph computes exactly
what PyTorch does). Rows at a review's real positions are summed and divided by the
square root of their count, as TF-IDF's L2 normalization divides counts, so long reviews do
not shout and one word of a short review still counts.
"""

from __future__ import annotations

import torch
from torch import nn

from scorer.nn.ngrams import hashed_pairs


class WideNgrams(nn.Module):
    def __init__(self, vocab_size: int, buckets: int, outputs: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.unigram = nn.Embedding(vocab_size, outputs)
        self.bigram = nn.Embedding(max(buckets, 1), outputs)
        # Zero start: the model begins as the LSTM alone, and unseen n-grams add nothing.
        nn.init.zeros_(self.unigram.weight)
        nn.init.zeros_(self.bigram.weight)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, K]: unigram rows plus bigram rows over each review's real tokens, each sum
        divided by the square root of its count
        (``lengths`` already clamped to [1, T]). No branch on the time axis' size, so the
        exported graph keeps it dynamic (one token: the bigram mean is zero)."""
        steps = ids.shape[1]
        ids = ids.long()
        time = torch.arange(steps, device=ids.device)[None, :]
        count = lengths.to(torch.float32)[:, None]
        unigrams = self.unigram(ids) * (time < lengths[:, None]).unsqueeze(-1)
        wide = unigrams.sum(dim=1) / torch.sqrt(count)
        pairs = hashed_pairs(ids, max(self.buckets, 1))
        real = (time < (lengths - 1)[:, None]).unsqueeze(-1)
        bigrams = (self.bigram(pairs) * real).sum(dim=1)
        return wide + bigrams / torch.sqrt(torch.clamp(count - 1, min=1.0))
