"""A model directory's PyTorch side: the weights written beside config.json with the training
report, and read back into the model they fit. Training and export use it; scoring, which
reads the ONNX graphs, never imports it (``scorer.runtime.model_dir`` stays torch-free)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorer.errors import UserError
from scorer.io.files import make_temp_dir, publish_dir
from scorer.nn.model import ReviewLSTM
from scorer.runtime.config import ModelCard, TokenizerConfig, TrainConfig
from scorer.runtime.model_dir import (
    CONFIG,
    FINGERPRINT,
    METRICS,
    REPORT,
    VOCAB,
    WEIGHTS,
    ModelDir,
    library_versions,
    prepare_output,
)
from scorer.runtime.profile import PROFILE_FILE, Profile
from scorer.text.vocab import Vocab
from scorer.train.report import write_report


def load_model(directory: ModelDir) -> ReviewLSTM:
    """The PyTorch model, rebuilt from config.json and checked against the weights."""
    weights = directory.path / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{directory.path} has no {WEIGHTS}")
    directory.vocab()  # refuse a tampered vocabulary before anything else
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise UserError(f"cannot load {weights}: {str(exc).splitlines()[0]}") from None
    model = ReviewLSTM(directory.card.model)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{weights} does not fit config.json: {first}") from None
    return model.eval()


def write_model_dir(
    out: Path,
    *,
    model,
    vocab: Vocab,
    tokenizer: TokenizerConfig,
    train: TrainConfig,
    labels: tuple[float, ...],
    text_columns: tuple[str, ...],
    metrics: dict[str, Any],
    overwrite: bool,
    training: dict[str, Any] | None = None,
    fingerprint: np.ndarray | None = None,
    profile: Profile | None = None,
) -> ModelDir:
    """Write everything into a temporary directory, then move it into place."""
    out = Path(out)
    prepare_output(out, overwrite=overwrite)
    card = ModelCard(
        model=model.config,
        tokenizer=tokenizer,
        train=train,
        labels=tuple(labels),
        text_columns=tuple(text_columns),
        vocab_sha256=vocab.sha256,
        versions=library_versions(),
        training=dict(training or {}),
    )
    tmp = make_temp_dir(out)
    try:
        torch.save(model.state_dict(), tmp / WEIGHTS)
        (tmp / CONFIG).write_text(card.to_json(), encoding="utf-8")
        vocab.save(tmp / VOCAB)
        if fingerprint is not None:
            np.save(tmp / FINGERPRINT, np.unique(fingerprint.astype(np.uint64)))
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        if profile is not None:
            (tmp / PROFILE_FILE).write_text(
                json.dumps(profile.to_dict(), indent=1) + "\n", encoding="utf-8"
            )
        write_report(tmp / REPORT, metrics)
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelDir(out, card)
