"""The self-describing model directory: weights, config, vocabulary, metrics, report.

model.pt      state_dict only (loaded with weights_only=True)
config.json   ModelCard: format_version, model/tokenizer/training config, labels,
              text columns, vocabulary sha256, library versions
vocab.json    tokens + sha256
metrics.json  validation and test metrics, per-epoch history
report.png    learning curves and the test confusion matrix
model.onnx    written by `scorer export`
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from scorer.config import ModelCard, TokenizerConfig, TrainConfig
from scorer.errors import UserError
from scorer.io import make_temp_dir
from scorer.vocab import Vocab

WEIGHTS, CONFIG, VOCAB, METRICS, REPORT, ONNX = (
    "model.pt",
    "config.json",
    "vocab.json",
    "metrics.json",
    "report.png",
    "model.onnx",
)


def prepare_output(out: Path, *, overwrite: bool) -> None:
    """Refuse an existing output unless asked to replace it; the parent must exist."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} does not exist")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ("scorer", "torch", "numpy", "polars", "spacy", "onnx", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class ModelDir:
    path: Path
    card: ModelCard

    @classmethod
    def open(cls, path: Path) -> ModelDir:
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path} is not a model directory")
        for name in (CONFIG, VOCAB):
            if not (path / name).is_file():
                raise UserError(f"{path} is not a complete model directory: {name} is missing")
        return cls(path, ModelCard.load(path / CONFIG))

    def vocab(self) -> Vocab:
        return Vocab.load(self.path / VOCAB, expected_sha256=self.card.vocab_sha256)

    def load_model(self):
        """The PyTorch model, rebuilt from config.json and checked against the weights."""
        import torch

        from scorer.model import ReviewLSTM

        weights = self.path / WEIGHTS
        if not weights.is_file():
            raise UserError(f"{self.path} has no {WEIGHTS}")
        self.vocab()  # refuse a tampered vocabulary before anything else
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a corrupt file
            raise UserError(f"cannot load {weights}: {str(exc).splitlines()[0]}") from None
        model = ReviewLSTM(self.card.model)
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"{weights} does not fit config.json: {first}") from None
        return model.eval()

    @classmethod
    def write(
        cls,
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
    ) -> ModelDir:
        """Write everything into a temporary directory, then move it into place."""
        import torch

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
        )
        tmp = make_temp_dir(out)
        try:
            torch.save(model.state_dict(), tmp / WEIGHTS)
            (tmp / CONFIG).write_text(card.to_json(), encoding="utf-8")
            vocab.save(tmp / VOCAB)
            (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            from scorer.report import write_report

            write_report(tmp / REPORT, metrics)
            _replace_dir(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(out, card)


def _replace_dir(new: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)
