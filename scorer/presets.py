"""Training presets: our default model, and the reference recipe's settings per variant.

Precedence when resolving options: explicit CLI flag > ``--config`` file > preset.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from scorer.config import ModelConfig, TokenizerConfig, TrainConfig
from scorer.errors import UserError

# The best model found on the validation split (see README, "Model quality").
DEFAULT: dict[str, Any] = {
    "variant": "packed",
    "embedding_dim": 100,
    "hidden_dim": 128,
    "layers": 1,
    "bidirectional": False,
    "pooling": "last+max",
    "dropout": 0.4,
    "max_len": 200,
    "min_count": 2,
    "keep_whitespace": True,
    "epochs": 8,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "patience": 3,
}

# The reference recipe's sizes (embedding 50, hidden 50, max_len 70, one direction, the last
# hidden state) and its per-variant dropout; trained with batch 256.
REFERENCE: dict[str, Any] = {
    "embedding_dim": 50,
    "hidden_dim": 50,
    "layers": 1,
    "bidirectional": False,
    "pooling": "last",
    "max_len": 70,
    "min_count": 2,
    "keep_whitespace": True,
    "epochs": 15,
    "batch_size": 256,
    "lr": 1e-2,
    "weight_decay": 0.0,
    "patience": 4,
}
REFERENCE_DROPOUT = {"fixed": 0.2, "packed": 0.3, "vectors": 0.2, "regression": 0.2}
# What each variant means for the architecture.
VARIANT_SHAPE = {
    "fixed": {"packed": False, "freeze_embeddings": False},
    "packed": {"packed": True, "freeze_embeddings": False},
    "vectors": {"packed": False, "freeze_embeddings": True},
    "regression": {"packed": False, "freeze_embeddings": False},
}

_MODEL_KEYS = {f.name for f in fields(ModelConfig)} - {"vocab_size", "num_labels"}
_TOKENIZER_KEYS = {f.name for f in fields(TokenizerConfig)}
_TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
KNOWN_KEYS = _MODEL_KEYS | _TOKENIZER_KEYS | _TRAIN_KEYS


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read --config {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"--config {path} must hold a JSON object")
    doc = {k.replace("-", "_"): v for k, v in doc.items()}
    unknown = sorted(set(doc) - KNOWN_KEYS)
    if unknown:
        raise UserError(f"--config {path}: unknown keys {unknown}; known: {sorted(KNOWN_KEYS)}")
    return doc


def resolve(
    overrides: dict[str, Any], *, reference: bool = False, config_file: Path | None = None
) -> tuple[ModelConfig, TokenizerConfig, TrainConfig]:
    """Merge preset, config file and explicit options (``None`` means not given)."""
    from_file = read_config_file(config_file) if config_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    variant = given.get("variant", from_file.get("variant", DEFAULT["variant"]))
    if variant not in VARIANT_SHAPE:
        raise UserError(f"unknown variant {variant!r}; use one of {', '.join(VARIANT_SHAPE)}")
    base = (
        {**REFERENCE, "dropout": REFERENCE_DROPOUT[variant]}
        if reference
        else {k: v for k, v in DEFAULT.items() if k != "variant"}
    )
    merged = {**base, **VARIANT_SHAPE[variant], **from_file, **given, "variant": variant}
    model = ModelConfig(
        vocab_size=1, num_labels=2, **{k: v for k, v in merged.items() if k in _MODEL_KEYS}
    )
    tokenizer = TokenizerConfig(**{k: v for k, v in merged.items() if k in _TOKENIZER_KEYS})
    train = TrainConfig(**{k: v for k, v in merged.items() if k in _TRAIN_KEYS})
    for name, value, low in (
        ("max_len", tokenizer.max_len, 1),
        ("epochs", train.epochs, 1),
        ("batch_size", train.batch_size, 1),
        ("min_count", tokenizer.min_count, 1),
    ):
        if value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if train.lr <= 0:
        raise UserError(f"--lr must be > 0, got {train.lr}")
    return model, tokenizer, train
