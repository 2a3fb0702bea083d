"""The self-describing model directory: weights, config, vocabulary, metrics, report.

model.pt      state_dict only (loaded with weights_only=True)
config.json   ModelCard: format_version, model/tokenizer/training config, labels,
              text columns, vocabulary sha256, library versions
vocab.json    tokens + sha256
metrics.json  validation and test metrics, per-epoch history
report.png    learning curves and the test confusion matrix
train_rows.npy  sorted 64-bit hashes of the training rows' text (``scorer eval`` warns
              when it is shown them again)
profile.json  the validation rows as the final model sees them (scorer.runtime.profile):
              what `scorer run` measures drift against
model*.onnx   written by `scorer export`: one graph per provider
              (scorer.runtime.contract.GRAPH_FILES),
              each one's sha256 recorded in config.json and checked at load

Opened and checked here, without torch; the weights and the report are written and read by
``scorer.train.checkpoint``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from scorer.errors import UserError
from scorer.io.files import atomic_write_text
from scorer.runtime.config import ModelCard
from scorer.runtime.profile import PROFILE_FILE, Profile
from scorer.text.vocab import Vocab

WEIGHTS, CONFIG, VOCAB, METRICS, REPORT, ONNX, FINGERPRINT = (
    "model.pt",
    "config.json",
    "vocab.json",
    "metrics.json",
    "report.png",
    "model.onnx",
    "train_rows.npy",
)


BUNDLED = "default_model"
MODEL_ENV = "SCORER_MODEL"


def bundled_model_dir() -> Path:
    """The default English product-review model shipped in the package (``make model``)."""
    from importlib import resources

    return Path(str(resources.files("scorer").joinpath(BUNDLED)))


def resolve_model_dir(given: Path | None) -> Path:
    """``--model``, else ``$SCORER_MODEL``, else the bundled default model."""
    if given is not None:
        return Path(given)
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    path = bundled_model_dir()
    if not (path / CONFIG).is_file():
        raise UserError(
            f"no --model given and this install has no bundled default model ({path}); "
            f"pass --model MODEL_DIR or set {MODEL_ENV}"
        )
    return path


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

    def training_rows(self) -> np.ndarray | None:
        """Sorted hashes of the training rows' text (``scorer.text.encode.row_hashes``), if kept."""
        path = self.path / FINGERPRINT
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None

    def profile(self) -> Profile | None:
        """The validation rows' profile saved by training, checked against config.json;
        None for a model trained before profiles were kept."""
        path = self.path / PROFILE_FILE
        if not path.is_file():
            return None
        try:
            profile = Profile.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        card = self.card
        if profile.labels != tuple(float(v) for v in card.labels) or (
            profile.max_len != card.tokenizer.max_len
        ):
            raise UserError(f"{path} does not fit config.json (labels or max_len differ)")
        return profile

    def record_graphs(self, graphs: dict[str, dict[str, Any]]) -> ModelDir:
        """Rewrite config.json with these graph entries (file name -> sha256, provider,
        precision, ...) replacing the ones for the same files; atomically."""
        card = ModelCard.load(self.path / CONFIG)
        merged = {**card.graphs, **graphs}
        updated = dataclasses.replace(card, graphs=dict(sorted(merged.items())))
        atomic_write_text(self.path / CONFIG, updated.to_json())
        return ModelDir(self.path, updated)
