"""Length-bucketed batches: similar lengths together, so packed batches carry little padding."""

from __future__ import annotations

import numpy as np


def bucket_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, pool_batches: int = 50
) -> list[np.ndarray]:
    """Shuffle, cut pools of ``pool_batches`` batches, sort each pool by length, cut batches,
    then shuffle the batches (so an epoch is not ordered short-to-long)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def padding_fraction(batches: list[np.ndarray], lengths: np.ndarray) -> float:
    """Share of padded cells when each batch is padded to its longest member."""
    lengths = np.maximum(lengths, 1)
    cells = sum(int(lengths[b].max()) * len(b) for b in batches)
    real = sum(int(lengths[b].sum()) for b in batches)
    return 1.0 - real / cells if cells else 0.0
