"""One frozen config per concern, serialized beside the weights in ``config.json``.

A model directory is rebuilt from these alone, never from CLI defaults.
"""

from __future__ import annotations

import dataclasses
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scorer.errors import UserError

# 2: one graph per provider, their sha256 recorded in config.json ("graphs"), and the
# training rows' fingerprint ("training").
FORMAT_VERSION = 2
Variant = Literal["fixed", "packed", "vectors", "regression"]
VARIANTS: tuple[str, ...] = ("fixed", "packed", "vectors", "regression")
POOLINGS: tuple[str, ...] = ("last", "last+max")
# TrainConfig fields that once were: "budget", the search's seconds (search_budget now).
LEGACY_TRAIN_KEYS = frozenset({"budget"})


def check_marks(marks: str) -> str:
    """``marks`` if it names distinct ASCII punctuation characters; else a UserError."""
    if not isinstance(marks, str) or any(c not in string.punctuation for c in marks):
        raise UserError(f"marks must be ASCII punctuation characters, got {marks!r}")
    if len(set(marks)) != len(marks):
        raise UserError(f"marks must not repeat a character, got {marks!r}")
    return marks


@dataclass(frozen=True)
class TokenizerConfig:
    """How text becomes ids; scoring reuses it verbatim so train and score never disagree."""

    keep_whitespace: bool = True
    max_len: int = 70
    min_count: int = 2
    # Of a review longer than max_len, the last ``tail`` tokens are kept after the first
    # ``max_len - tail``: a long review's verdict is often at its end. 0: the head only.
    tail: int = 0
    # Set max_len (at most the one given) and tail from the training reviews' lengths
    # (presets.fit_lengths); the model's config.json holds the values chosen.
    fit_length: bool = False
    # Punctuation kept, each character a token of its own ("!?": "great!" reads as "great",
    # "!"); all other punctuation is cleaned away, as the reference recipe does.
    marks: str = ""
    # Marks tried against ``marks`` on validation before training (scorer.train.marks_choice), the
    # better kept; the model's config.json holds the marks kept and "" here. "": no choice.
    marks_choice: str = ""

    def __post_init__(self) -> None:
        check_marks(self.marks)
        check_marks(self.marks_choice)
        if not 0 <= self.tail <= self.max_len:
            raise UserError(f"tail must be in [0, max_len={self.max_len}], got {self.tail}")


@dataclass(frozen=True)
class ModelConfig:
    """The network. ``packed`` runs only each review's real tokens; otherwise the LSTM reads
    the whole right-padded ``max_len`` sequence (the reference's fixed-length model)."""

    variant: Variant
    vocab_size: int
    num_labels: int
    embedding_dim: int = 50
    hidden_dim: int = 50
    layers: int = 1
    bidirectional: bool = False
    packed: bool = False
    pooling: str = "last"
    dropout: float = 0.2
    freeze_embeddings: bool = False
    # The wide path (scorer.nn.wide): a linear bag of unigrams and of bigrams hashed into this
    # many buckets, added to the LSTM's logits. 0: the LSTM alone.
    wide_buckets: int = 0
    # The blended linear path (scorer.nn.linear, fitted after training by
    # scorer.train.blend): bigrams hashed into this many buckets. 0: none.
    linear_buckets: int = 0

    @property
    def regression(self) -> bool:
        return self.variant == "regression"

    @property
    def outputs(self) -> int:
        return 1 if self.regression else self.num_labels

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"unknown variant {self.variant!r}; use one of {', '.join(VARIANTS)}")
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}")
        for name in ("vocab_size", "embedding_dim", "hidden_dim", "layers", "num_labels"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("wide_buckets", "linear_buckets"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    patience: int = 3
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    grad_clip: float = 1.0
    threads: int | None = None
    expected_loss_weight: float = 0.0
    # The wide path's learning rate, as a multiple of lr (see train._param_groups).
    wide_lr_scale: float = 3.0
    # The wide path's (decoupled) weight decay; None: weight_decay. Its n-gram tables
    # memorize fast, and early stopping alone then stops the LSTM too soon.
    wide_weight_decay: float | None = None
    label_smoothing: float = 0.0
    # Each real token of a training review becomes <unk> with this probability (fresh each
    # step): the model cannot lean on a few words it has memorized. Training only.
    token_dropout: float = 0.0
    # Distillation (scorer.train.teacher): a model of this hidden size trained first, whose
    # probabilities the model learns from too (0: none; ``scorer train --teacher DIR`` takes
    # one from a model directory instead). The soft targets' share of the cross-entropy and
    # their temperature (scorer.train.fit.Objective); both 0/1 when no teacher taught the model.
    teacher_hidden_dim: int = 0
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    # Checkpoint averaging: the mean weights of this many epochs ending at the best one
    # (kept if better on validation); 1 keeps the best epoch's weights.
    average_epochs: int = 1
    # After the search: a linear model over idf-weighted n-grams fitted on its own and blended
    # in on validation (scorer.train.blend). Classification only.
    blend: bool = False
    # After the search and the blend: the kept candidate trained again on the training and
    # validation rows together, for the epochs early stopping chose (scorer.train.refit); the
    # linear model refitted at its chosen C. Everything is still chosen on validation first.
    refit: bool = False
    # At least this many training examples seen: small data gets more epochs
    # (presets.apply_min_samples).
    min_samples: int = 0
    # The search's size in millions of training token passes (presets.search_plan): the
    # teacher, the search's candidates and the refit all count, and as many of
    # presets.SEARCH_VARIANTS as fit are tried after the default, the lowest validation loss
    # (under the default's objective, as early stopping judges epochs) kept. Planned from
    # the data, never the clock. 0: train the default only.
    search_budget: float = 0.0
    # Which search variant this config is ("" for the default).
    search_variant: str = ""
    # Which of batch_size and lr the user left to presets (no flag, no --config key, no
    # --reference): once the device is known, its preset sets them (presets.batch_preset).
    from_preset: tuple[str, ...] = ()
    # Where the batch size and learning rate that trained the model came from.
    batch_source: str = "given"

    def __post_init__(self) -> None:
        # config.json stores tuples as lists; keep the frozen config hashable when read back.
        object.__setattr__(self, "from_preset", tuple(self.from_preset))


@dataclass(frozen=True)
class ModelCard:
    """Everything ``config.json`` holds: enough to rebuild, check and score the model.

    ``graphs`` (written by ``scorer export``) maps each ONNX file to its sha256, provider and
    precision; ``training`` fingerprints the training data. Neither goes into the card that
    is embedded in the ONNX files (``embedded_json``): a graph cannot hold its own hash.
    """

    model: ModelConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    labels: tuple[float, ...]
    text_columns: tuple[str, ...]
    vocab_sha256: str
    versions: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def embedded_json(self) -> str:
        """The card as stamped into ONNX metadata and scored outputs (no graph hashes)."""
        doc = dataclasses.asdict(self)
        del doc["graphs"]
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelCard:
        """The card of a config.json; keys of ``LEGACY_TRAIN_KEYS`` (settings that decided
        nothing scoring reads) are dropped, so model directories written before still load."""
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(
                f"config.json has format_version {version!r}; this scorer reads {FORMAT_VERSION}"
            )
        try:
            return cls(
                model=ModelConfig(**doc["model"]),
                tokenizer=TokenizerConfig(**doc["tokenizer"]),
                train=TrainConfig(
                    **{k: v for k, v in doc["train"].items() if k not in LEGACY_TRAIN_KEYS}
                ),
                labels=tuple(float(v) for v in doc["labels"]),
                text_columns=tuple(doc["text_columns"]),
                vocab_sha256=str(doc["vocab_sha256"]),
                versions=dict(doc.get("versions", {})),
                training=dict(doc.get("training", {})),
                graphs={str(k): dict(v) for k, v in doc.get("graphs", {}).items()},
                format_version=version,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"config.json is malformed: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise UserError(f"{path} is not a JSON object")
        return cls.from_dict(doc)
