"""The LSTM rating model (PyTorch): the reference's four variants and our default."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from scorer.errors import UserError
from scorer.nn.linear import IdfNgrams
from scorer.nn.wide import WideNgrams
from scorer.runtime.config import ModelConfig


class ReviewLSTM(nn.Module):
    """Embedding -> (bi)LSTM -> features -> linear head, plus an optional wide path (a linear
    bag of n-grams, ``scorer.nn.wide``) added to the head's output.

    Features are the last layer's final hidden state per direction (``pooling="last"``),
    optionally concatenated with a max over time of the outputs at real (unpadded) positions
    (``"last+max"``). Classification returns logits ``[B, K]``; regression returns ``[B]``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        if config.freeze_embeddings:
            self.embedding.weight.requires_grad_(False)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_dim,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        directions = 2 if config.bidirectional else 1
        features = config.hidden_dim * directions * (2 if config.pooling == "last+max" else 1)
        self.head_dropout = nn.Dropout(config.dropout if config.pooling != "last" else 0.0)
        self.head = nn.Linear(features, config.outputs)
        self.wide = (
            WideNgrams(config.vocab_size, config.wide_buckets, config.outputs)
            if config.wide_buckets
            else None
        )
        self.linear = (
            IdfNgrams(config.vocab_size, config.linear_buckets, config.outputs)
            if config.linear_buckets
            else None
        )

    def forward(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        cpu_lengths: torch.Tensor | None = None,
        *,
        lstm_fp32: bool = False,
        pack: bool = False,
    ) -> torch.Tensor:
        """``cpu_lengths``: the same lengths as a CPU tensor, for ``pack_padded_sequence``.
        Training passes them from its host-side copy: ``lengths.cpu()`` would make the host
        wait for the GPU on every batch. ``lstm_fp32``: run the LSTM in fp32 outside the
        autocast region (see ``scorer.nn.device``: bf16 precision). ``pack``: run a packed
        model's LSTM through ``pack_padded_sequence`` even in one direction (the definition
        the export is validated against; ``_recur`` computes the same faster)."""
        steps = ids.shape[1]
        # An empty review still runs one step (over PAD, whose embedding is zero).
        lengths = lengths.clamp(1, steps)
        host = cpu_lengths.clamp(1, steps) if cpu_lengths is not None else None
        x = self.embed_dropout(self.embedding(ids))
        if lstm_fp32 and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                out, h = self._recur(x.float(), lengths, host, steps, pack)
        else:
            out, h = self._recur(x, lengths, host, steps, pack)
        features = self._final_state(h)
        if self.config.pooling == "last+max":
            assert out is not None
            valid = torch.arange(steps, device=ids.device)[None, :] < lengths[:, None]
            masked = out.masked_fill(~valid[:, :, None], float("-inf"))
            features = torch.cat([features, masked.amax(dim=1)], dim=1)
        logits = self.head(self.head_dropout(features))
        if self.wide is not None:
            logits = logits + self.wide(ids, lengths).to(logits.dtype)
        if self.linear is not None:
            logits = logits + self.linear(ids, lengths).to(logits.dtype)
        return logits.squeeze(-1) if self.config.regression else logits

    def _recur(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        host: torch.Tensor | None,
        steps: int,
        pack: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(outputs [B, T, D] when pooling needs them, final hidden states [L*dirs, B, H];
        for one direction, only the last layer's)."""
        if not self.config.packed:
            out, (h, _) = self.lstm(x)
            return out, h
        if not self.config.bidirectional and not pack:
            # Batches come cut to their longest review (make_batch), so little is wasted.
            return self._recur_forward_only(x, lengths)
        host = lengths.cpu() if host is None else host
        # Sorted here rather than by pack_padded_sequence(enforce_sorted=False): unpacking
        # such a sequence copies its order back to the host (a GPU sync per batch). Both
        # permutations are computed on the host and only sent to the device.
        host_sorted, order = torch.sort(host, descending=True)
        restore = torch.empty_like(order)
        restore[order] = torch.arange(len(order))
        order = order.to(x.device, non_blocking=True)
        restore = restore.to(x.device, non_blocking=True)
        packed = pack_padded_sequence(x.index_select(0, order), host_sorted, batch_first=True)
        out_packed, (h, _) = self.lstm(packed)
        h = h.index_select(1, restore)
        if self.config.pooling != "last+max":
            return None, h
        out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=steps)
        return out.index_select(0, restore), h

    def _recur_forward_only(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed semantics for a forward-only LSTM without packing: padding comes after a
        review's real tokens, so the output at ``length - 1`` never saw it (as in
        ``export.graph``). PyTorch's packed LSTM made a CPU epoch of the default model 2.5x
        slower (``benchmarks/train_packing.py``)."""
        out, _ = self.lstm(x)
        index = (lengths - 1).view(-1, 1, 1)
        last = out.gather(1, index.expand(-1, 1, out.shape[2])).squeeze(1)
        return out, last.unsqueeze(0)

    def _final_state(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.bidirectional:
            return torch.cat([h[-2], h[-1]], dim=1)
        return h[-1]


def load_vectors(path, vocab_tokens: tuple[str, ...], dim: int | None, seed: int) -> np.ndarray:
    """Embedding matrix from a GloVe-format text file (``word v1 ... vd`` per line).

    Rows of words the file lacks are random (scaled like the file's vectors); PAD is zero.
    """
    index = {t: i for i, t in enumerate(vocab_tokens)}
    found: dict[int, np.ndarray] = {}
    width = dim
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if len(parts) < 2:
                    if line.strip():
                        raise UserError(f"{path}:{number}: expected 'word v1 v2 ...'")
                    continue
                if width is None:
                    width = len(parts) - 1
                if len(parts) - 1 != width:
                    raise UserError(
                        f"{path}:{number}: vector has {len(parts) - 1} values, expected {width}"
                        + (" (--embedding-dim)" if dim is not None else "")
                    )
                row = index.get(parts[0])
                if row is not None and row not in found:
                    try:
                        found[row] = np.asarray(parts[1:], dtype=np.float32)
                    except ValueError:
                        raise UserError(f"{path}:{number}: non-numeric vector value") from None
    except OSError as exc:
        raise UserError(f"cannot read vectors file {path}: {exc.strerror}") from None
    if width is None or not found:
        raise UserError(f"{path}: no vector for any vocabulary word")
    known = np.stack(list(found.values()))
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, float(known.std()) or 0.1, (len(vocab_tokens), width))
    matrix = matrix.astype(np.float32)
    for row, vector in found.items():
        matrix[row] = vector
    matrix[0] = 0.0
    return matrix
