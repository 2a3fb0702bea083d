"""Encoded training data on the training device, and the batches cut from it.

Lengths live twice: on the device (masks, gathers) and as a host-side numpy copy. Anything
the host needs per batch (the longest review, ``pack_padded_sequence``'s CPU lengths) is read
from the copy, so the training loop never waits for the GPU to answer a question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from scorer.nn.device import Runtime
from scorer.runtime.config import TokenizerConfig
from scorer.text.encode import Texts
from scorer.text.vocab import PAD_ID, Vocab
from scorer.train.batching import bucket_batches, padding_fraction, random_batches


@dataclass(frozen=True)
class Dataset:
    ids: torch.Tensor
    lengths: torch.Tensor
    host_lengths: np.ndarray  # int64, the same values as ``lengths``, kept on the host
    target: torch.Tensor
    label_index: np.ndarray
    # A teacher's probabilities of each row [n, K] (distillation, scorer.train.teacher); None: none.
    soft: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.label_index)


class Batch(NamedTuple):
    index: torch.Tensor  # the batch's rows, on the device
    ids: torch.Tensor
    lengths: torch.Tensor
    cpu_lengths: torch.Tensor
    target: torch.Tensor
    soft: torch.Tensor | None = None


def to_dataset(
    vocab: Vocab,
    texts: Texts,
    label_index: np.ndarray,
    labels: Sequence[float],
    tok: TokenizerConfig,
    runtime: Runtime,
) -> Dataset:
    enc = vocab.encode(
        texts,
        max_len=tok.max_len,
        keep_whitespace=tok.keep_whitespace,
        tail=tok.tail,
        marks=tok.marks,
    )
    values = np.asarray(labels, dtype=np.float32)
    host_lengths = enc.lengths.astype(np.int64)

    def move(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if runtime.cuda:
            # Moved once: batches are then gathered on the device itself.
            return tensor.pin_memory().to(runtime.device, non_blocking=True)
        return tensor

    # Column 0: class index (classification target), column 1: rating (regression target).
    target = np.stack([label_index.astype(np.float32), values[label_index]], axis=1)
    return Dataset(
        ids=move(enc.ids.astype(np.int64)),
        lengths=move(host_lengths),
        host_lengths=host_lengths,
        target=move(target),
        label_index=label_index,
    )


def join(first: Dataset, second: Dataset) -> Dataset:
    """``first``'s rows, then ``second``'s, in one dataset (the refit trains on training and
    validation rows together); the narrower ids are padded to the wider's width."""
    width = max(first.ids.shape[1], second.ids.shape[1])

    def widen(ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=PAD_ID)

    soft = None
    if first.soft is not None and second.soft is not None:
        soft = torch.cat([first.soft, second.soft])
    elif (first.soft is None) != (second.soft is None):
        raise ValueError("join: one dataset has a teacher's probabilities, the other not")
    return Dataset(
        ids=torch.cat([widen(first.ids), widen(second.ids)]),
        lengths=torch.cat([first.lengths, second.lengths]),
        host_lengths=np.concatenate([first.host_lengths, second.host_lengths]),
        target=torch.cat([first.target, second.target]),
        label_index=np.concatenate([first.label_index, second.label_index]),
        soft=soft,
    )


def make_batch(data: Dataset, rows: np.ndarray, fixed_len: bool, device: torch.device) -> Batch:
    index = torch.from_numpy(rows).to(device, non_blocking=True)
    host = data.host_lengths[rows]
    ids = data.ids[index]
    if not fixed_len:
        # Packed models never look past a batch's longest review: trim the padding.
        ids = ids[:, : max(int(host.max()), 1)]
    soft = data.soft[index] if data.soft is not None else None
    return Batch(index, ids, data.lengths[index], torch.from_numpy(host), data.target[index], soft)


def padding_stats(lengths: np.ndarray, batch_size: int, seed: int) -> dict[str, float]:
    """Padding fraction of length-bucketed against random batches (recorded in metrics)."""
    rng = np.random.default_rng(seed)
    return {
        "bucketed": padding_fraction(bucket_batches(lengths, batch_size, rng), lengths),
        "random": padding_fraction(random_batches(len(lengths), batch_size, rng), lengths),
    }


def training_fingerprint(
    data: str | Path, split_file: Path | None, rows: dict[str, np.ndarray]
) -> dict[str, object]:
    """Which data trained the model: the input's sha256 (``Source.sha256``: a folder, glob or
    URL too) and the rows of each split (the rows' own text hashes go to train_rows.npy, for
    `scorer eval` to recognise them)."""
    from scorer.io.source import open_source

    source = open_source(data)
    return {
        "data": str(data) if source.files[0].remote else Path(data).name,
        "data_sha256": source.sha256(),
        "split_file": Path(split_file).name if split_file else None,
        "rows": {name: len(r) for name, r in rows.items()},
    }
