"""Training presets: our default model, and the reference recipe's settings per variant.

Precedence when resolving options: explicit CLI flag > ``--set`` > ``--config`` file >
preset. Batch
size and learning rate left to the preset are settled once the device and the training rows
are known: on CUDA they come from ``CUDA_DEFAULT`` unless the data is small
(``apply_batch_preset``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from scorer.errors import UserError
from scorer.runtime.config import ModelConfig, TokenizerConfig, TrainConfig

# The default recipe. Every choice was made on validation rows (docs/quality.md); the map of
# students it was chosen from: benchmarks/results/2026-12-06-vm-students.json.
DEFAULT: dict[str, Any] = {
    "variant": "packed",
    "embedding_dim": 100,
    # A small LSTM, distilled from a large one: at hidden 32 an LSTM step costs a sixteenth
    # of hidden 128's multiply-adds, and taught by a hidden-128 teacher (trained first, on
    # the training rows) it matched the teacher's validation loss, where hidden 16 fell
    # behind (the students' map).
    "hidden_dim": 32,
    "layers": 1,
    "bidirectional": False,
    "pooling": "last+max",
    "teacher_hidden_dim": 128,
    # The soft targets' weight and temperature: the lowest validation loss of a grid over
    # (0.5, 0.8) x (1, 2, 4, 8) at 8 epochs; 2 and 0.5 is a search variant (below).
    "distill_weight": 0.8,
    "distill_temperature": 4.0,
    # Lighter dropout and the expected rating's error weighted as much as the cross-entropy:
    # chosen on the reference reviews' validation rows over 3 seeds (docs/quality.md). A
    # fifth of the tokens hidden at each training step: its validation loss was below a
    # tenth's on the reference reviews' 3 seeds, and on 11 of the 14 seeds where the search
    # tried both over five datasets (benchmarks/results/2026-12-03-vm-quality-*-fast.json).
    "dropout": 0.3,
    "token_dropout": 0.2,
    # Fitted to the training reviews: their 95th-percentile length, at most 400 tokens, a
    # quarter of it kept from the end of longer ones (fixed caps of 60 and 80 lost on
    # validation: the students' map).
    "max_len": 400,
    "fit_length": True,
    "min_count": 2,
    "keep_whitespace": True,
    # "!" and "?" kept as words where the linear model prefers them on validation
    # (scorer.train.marks_choice): longer reviews gain, short ones lose (docs/quality.md).
    "marks_choice": "!?",
    # Wide and deep: a linear bag of unigrams and hashed bigrams beside the LSTM.
    "wide_buckets": 32_768,
    "wide_lr_scale": 3.0,
    "expected_loss_weight": 1.0,
    "average_epochs": 3,
    # 12 epochs of the one-cycle rate: at 8 the students were still learning when the rate
    # ran out (validation loss 1.1396 at 8 epochs, 1.1243 at 12, hidden 48; the teacher
    # early-stops either way).
    "epochs": 12,
    # Small data: at least 150,000 examples seen.
    "min_samples": 150_000,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "patience": 3,
    # The search's size in millions of training token passes (search_plan): on the
    # reference reviews the teacher, two candidates and the refit; small data tries all.
    "search_budget": 80.0,
    # Then a linear model over idf-weighted n-grams, fitted on its own and blended in on
    # validation (scorer.train.blend).
    "blend": True,
    # Then the kept model trained again on training + validation rows (scorer.train.refit): ahead
    # on every seed on validation in a nested split of the reference reviews
    # (benchmarks/results/2026-12-03-vm-quality-refit-nested.json).
    "refit": True,
}

# Named changes to DEFAULT (`scorer train --recipe NAME`). "hidden128": the default before the
# distilled one (through 2026-12-03): the hidden-128 model alone, 8 epochs, no teacher; its
# budget plans one candidate on the reference reviews and every variant on small data, as
# its clock-timed search ran them there. Slower to score (docs/performance.md), level on
# quality (docs/quality.md).
RECIPES: dict[str, dict[str, Any]] = {
    "hidden128": {"hidden_dim": 128, "teacher_hidden_dim": 0, "epochs": 8, "search_budget": 60.0},
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
# Batch size and peak learning rate when training runs on CUDA and the user set neither:
# batch 128 leaves a GPU idle between tiny kernels. Chosen on the reference reviews'
# validation rows (README, "Model quality"; the runs are in
# benchmarks/results/2026-11-26-vm-quality-ablation.jsonl).
CUDA_DEFAULT: dict[str, Any] = {"batch_size": 512, "lr": 6e-3}
# Below this many CUDA batches of training rows an epoch, the CPU default applies on CUDA too:
# a few thousand reviews would make a handful of steps an epoch (or none: fewer rows than one
# batch), and small data trains in seconds at any batch size.
MIN_CUDA_BATCHES = 16
BATCH_KEYS = ("batch_size", "lr")

REFERENCE_DROPOUT = {"fixed": 0.2, "packed": 0.3, "vectors": 0.2, "regression": 0.2}
# What each variant means for the architecture.
VARIANT_SHAPE = {
    "fixed": {"packed": False, "freeze_embeddings": False},
    "packed": {"packed": True, "freeze_embeddings": False},
    "vectors": {"packed": False, "freeze_embeddings": True},
    "regression": {"packed": False, "freeze_embeddings": False},
}

MAX_EPOCHS = 40

# linear_buckets is set by the blend (scorer.train.blend), not an option.
_MODEL_KEYS = {f.name for f in fields(ModelConfig)} - {"vocab_size", "num_labels", "linear_buckets"}
_TOKENIZER_KEYS = {f.name for f in fields(TokenizerConfig)}
# Set by resolve() and train_model(), not options.
_TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {"from_preset", "batch_source"}
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


@dataclass(frozen=True)
class RecipeOptions:
    """The recipe settings given as ``scorer train`` flags; ``None``: not given."""

    variant: str | None = None
    bidirectional: bool | None = None
    layers: int | None = None
    embedding_dim: int | None = None
    hidden_dim: int | None = None
    pooling: str | None = None
    dropout: float | None = None
    max_len: int | None = None
    min_count: int | None = None
    keep_whitespace: bool | None = None
    marks: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    patience: int | None = None
    expected_loss_weight: float | None = None
    tail: int | None = None
    wide_buckets: int | None = None
    wide_lr_scale: float | None = None
    label_smoothing: float | None = None
    token_dropout: float | None = None
    average_epochs: int | None = None
    blend: bool | None = None
    refit: bool | None = None
    search_budget: float | None = None
    teacher_hidden_dim: int | None = None
    distill_weight: float | None = None
    distill_temperature: float | None = None
    device: str | None = None
    precision: str | None = None
    seed: int | None = None
    threads: int | None = None

    def given(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


_SECTIONS = {"model": "_MODEL_KEYS", "tokenizer": "_TOKENIZER_KEYS", "train": "_TRAIN_KEYS"}


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` settings (``--set``): KEY a recipe key, or dotted with its config section
    (``model.hidden_dim``, ``train.epochs``) as config.json spells it; VALUE read as JSON,
    else kept as text (``pooling=last``)."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: write KEY=VALUE, e.g. hidden_dim=48")
        section, _, name = key.strip().replace("-", "_").rpartition(".")
        if section and (section not in _SECTIONS or name not in globals()[_SECTIONS[section]]):
            raise UserError(
                f"--set {key}: not a setting of a config section ({', '.join(_SECTIONS)})"
            )
        if name not in KNOWN_KEYS and name != "variant":
            raise UserError(f"--set {key}: unknown key; known: {sorted(KNOWN_KEYS)}")
        settings[name] = _setting(key, name, raw.strip())
    return settings


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _setting(key: str, name: str, raw: str) -> Any:
    """VALUE as the setting's type (a flag's: bool, int, float or text); other keys as JSON,
    else as text."""
    kind = next((str(f.type) for f in fields(RecipeOptions) if f.name == name), "")
    try:
        if "bool" in kind:
            if raw.lower() not in (*_TRUE, *_FALSE):
                raise ValueError(raw)
            return raw.lower() in _TRUE
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
        value = json.loads(raw)
    except ValueError:
        if kind and "str" not in kind:
            want = kind.split(" |")[0]
            raise UserError(f"--set {key}={raw}: {name} takes {want} values") from None
        return raw
    return value if not kind or isinstance(value, str) else raw


def resolve(
    overrides: RecipeOptions | dict[str, Any],
    *,
    reference: bool = False,
    config_file: Path | None = None,
    recipe: str | None = None,
    sets: dict[str, Any] | None = None,
) -> tuple[ModelConfig, TokenizerConfig, TrainConfig]:
    """Merge preset (``DEFAULT`` with a named ``recipe``'s changes, or ``REFERENCE``),
    config file, ``--set`` settings and explicit options (``None`` means not given), later
    ones winning."""
    if recipe is not None and recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    if recipe is not None and reference:
        raise UserError("--recipe and --reference are two recipes: give one")
    from_file = {**(read_config_file(config_file) if config_file else {}), **(sets or {})}
    if isinstance(overrides, RecipeOptions):
        overrides = overrides.given()
    given = {k: v for k, v in overrides.items() if v is not None}
    variant = given.get("variant", from_file.get("variant", DEFAULT["variant"]))
    if variant not in VARIANT_SHAPE:
        raise UserError(f"unknown variant {variant!r}; use one of {', '.join(VARIANT_SHAPE)}")
    base = (
        {**REFERENCE, "dropout": REFERENCE_DROPOUT[variant]}
        if reference
        else {k: v for k, v in {**DEFAULT, **RECIPES.get(recipe, {})}.items() if k != "variant"}
    )
    merged = {**base, **VARIANT_SHAPE[variant], **from_file, **given, "variant": variant}
    # Marks the user set are used as set, not weighed against the preset's choice.
    asked = {**from_file, **given}
    if "marks" in asked and "marks_choice" not in asked:
        merged["marks_choice"] = ""
    # The reference recipe's batch and rate are part of the recipe: never replaced.
    from_preset = tuple(
        k for k in (*BATCH_KEYS, "epochs") if not (reference or k in given or k in from_file)
    )
    model = ModelConfig(
        vocab_size=1, num_labels=2, **{k: v for k, v in merged.items() if k in _MODEL_KEYS}
    )
    tokenizer = TokenizerConfig(**{k: v for k, v in merged.items() if k in _TOKENIZER_KEYS})
    train = TrainConfig(
        **{k: v for k, v in merged.items() if k in _TRAIN_KEYS}, from_preset=from_preset
    )
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
    if train.average_epochs < 1:
        raise UserError(f"--average-epochs must be >= 1, got {train.average_epochs}")
    if not 0.0 <= train.label_smoothing < 1.0:
        raise UserError(f"--label-smoothing must be in [0, 1), got {train.label_smoothing}")
    if not 0.0 <= train.token_dropout < 1.0:
        raise UserError(f"--token-dropout must be in [0, 1), got {train.token_dropout}")
    if not 0.0 <= train.distill_weight < 1.0:
        raise UserError(f"--distill-weight must be in [0, 1), got {train.distill_weight}")
    if train.distill_temperature <= 0:
        raise UserError(f"--distill-temperature must be > 0, got {train.distill_temperature}")
    if train.wide_lr_scale <= 0:
        raise UserError(f"--wide-lr-scale must be > 0, got {train.wide_lr_scale}")
    return model, tokenizer, train


def batch_preset(
    device_type: str,
    given: dict[str, Any],
    default: dict[str, Any] = DEFAULT,
    train_rows: int | None = None,
) -> tuple[int, float, str]:
    """Batch size, learning rate and where they came from, once the device is known.

    ``given``: the ones the user set. On CUDA the others come from ``CUDA_DEFAULT``, unless
    ``train_rows`` make fewer than ``MIN_CUDA_BATCHES`` of its batches; elsewhere from
    ``default``. A given value is never replaced.
    """
    preset, name = (CUDA_DEFAULT, "cuda preset") if device_type == "cuda" else (default, "default")
    small = train_rows is not None and train_rows < MIN_CUDA_BATCHES * CUDA_DEFAULT["batch_size"]
    if device_type == "cuda" and small and "batch_size" not in given:
        preset, name = default, "default: small data"
    batch_size = int(given.get("batch_size", preset["batch_size"]))
    lr = float(given.get("lr", preset["lr"]))
    chosen = [k for k in BATCH_KEYS if k not in given]
    if not chosen:
        source = "given"
    elif len(chosen) == len(BATCH_KEYS):
        source = name
    else:
        source = f"{', '.join(k for k in BATCH_KEYS if k in given)} given; {chosen[0]} from {name}"
    return batch_size, lr, source


def apply_batch_preset(
    train: TrainConfig, device_type: str, train_rows: int | None = None
) -> TrainConfig:
    """``train`` with the device's preset for what the user left to presets (given
    ``train_rows``, small data keeps the default on CUDA: ``batch_preset``), and the source."""
    given = {k: getattr(train, k) for k in BATCH_KEYS if k not in train.from_preset}
    batch_size, lr, source = batch_preset(device_type, given, train_rows=train_rows)
    return replace(train, batch_size=batch_size, lr=lr, batch_source=source)


def settle_teacher(train: TrainConfig, regression: bool, external: bool) -> TrainConfig:
    """``train`` as training records it: a teacher read from a directory (``external``)
    replaces the recipe's own, and a model no teacher taught (none asked for, or a
    regression, which has no probabilities to learn from) records the settings of none."""
    if external:
        return replace(train, teacher_hidden_dim=0)
    if not train.teacher_hidden_dim or regression:
        return replace(train, teacher_hidden_dim=0, distill_weight=0.0, distill_temperature=1.0)
    return train


def apply_min_samples(train: TrainConfig, train_rows: int) -> TrainConfig:
    """More epochs for small data, unless ``--epochs`` was given: at least ``min_samples``
    training examples seen (up to ``MAX_EPOCHS`` epochs). A few thousand reviews make 30
    batches an epoch, and 8 epochs of that leave an LSTM barely past the majority class;
    early stopping on the validation loss still ends training when more epochs stop helping.
    Counted in examples, not steps, so a larger batch (the CUDA preset) does not multiply
    the epochs."""
    if not train.min_samples or train_rows < 1 or "epochs" not in train.from_preset:
        return train  # --epochs given: taken as given
    needed = -(-train.min_samples // train_rows)
    epochs = min(max(train.epochs, needed), max(train.epochs, MAX_EPOCHS))
    return replace(train, epochs=epochs)


FIT_QUANTILE = 0.95  # of the training reviews' token counts
MIN_FIT_LEN = 64


def fit_lengths(tokenizer: TokenizerConfig, texts) -> TokenizerConfig:
    """With ``fit_length``, ``max_len`` follows the training reviews: their 95th-percentile
    token count, rounded up to a multiple of 8, between 64 and the given ``max_len``; and a
    quarter of it goes to the tail. Short reviews then cost no padding budget, and long
    ones keep their head and their verdict."""
    if not tokenizer.fit_length:
        return tokenizer
    import numpy as np

    from scorer.text.encode import token_strings

    counts, _ = token_strings(
        texts, keep_whitespace=tokenizer.keep_whitespace, marks=tokenizer.marks
    )
    quantile = float(np.quantile(counts, FIT_QUANTILE)) if len(counts) else 0.0
    fitted = int(min(tokenizer.max_len, max(MIN_FIT_LEN, -(-int(quantile) // 8) * 8)))
    return replace(tokenizer, max_len=fitted, tail=fitted // 4, fit_length=False)


# What the search on validation tries after the default, as far as search_plan allows: the
# teacher's soft targets at temperature 2 and half the weight (the runner-up of the grid,
# and the better at 12 epochs for hidden 48); the model without its teacher (a teacher
# trained on a few thousand reviews can be a poor guide: on amazon_alexa the distilled
# model's validation RMSE was above its teacher's on two of three seeds); a tenth of the
# tokens hidden at each step (the former default, kept on some seeds of small data); then
# the wide path learning faster (small data leans more on its n-grams). A distillation
# variant needs a teacher.
SEARCH_VARIANTS: tuple[dict[str, Any], ...] = (
    {"distill_temperature": 2.0, "distill_weight": 0.5},
    {"distill_weight": 0.0},
    {"token_dropout": 0.1},
    {"wide_lr_scale": 10.0},
)
DISTILL_KEYS = frozenset({"distill_temperature", "distill_weight"})


def search_candidates(train: TrainConfig) -> list[TrainConfig]:
    """The default, then each variant of SEARCH_VARIANTS (only with a search budget). A variant
    that would change a setting the user moved off the preset (``--token-dropout 0.1``) is
    left out: the search never overrides a choice, nor retrains the same config."""
    candidates = [train]
    if train.search_budget:
        preset = {f.name: f.default for f in fields(TrainConfig)} | DEFAULT
        for variant in SEARCH_VARIANTS:
            if any(getattr(train, k) != preset[k] for k in variant):
                continue
            if DISTILL_KEYS & variant.keys() and not train.distill_weight:
                continue  # no teacher taught this model
            label = ", ".join(f"{k}={v}" for k, v in variant.items())
            candidates.append(replace(train, **variant, search_variant=label))
    return candidates


def pass_cost(hidden_dim: int) -> float:
    """What a training token costs at ``hidden_dim``, relative to hidden 48: an epoch's time
    grows with the hidden size plus a part that does not (the embedding, the wide path, the
    optimizer's step): an epoch of the reference reviews took 7.3 s at hidden 48 and 16.5 s
    at 128 here (2 threads), about as hidden + 32."""
    return (hidden_dim + 32) / 80


def search_plan(
    cfg: TrainConfig, hidden_dim: int, train_tokens: int, val_tokens: int, candidates: int
) -> int:
    """How many of ``candidates`` the search trains: as many as fit ``cfg.search_budget``
    (millions of training token passes, each at ``pass_cost`` of its model) once the
    teacher's and the refit's are counted; at least one. Each training counts at its most
    epochs (early stopping can only end it sooner). From the data alone: the same data
    plans the same search on any machine, however fast."""
    if not cfg.search_budget:
        return 1

    def passes(tokens: int, hidden: int) -> float:
        return tokens * cfg.epochs * pass_cost(hidden) / 1e6

    fixed = passes(train_tokens, cfg.teacher_hidden_dim) if cfg.teacher_hidden_dim else 0.0
    if cfg.refit:
        fixed += passes(train_tokens + val_tokens, hidden_dim)
    each = passes(train_tokens, hidden_dim)
    fits = int((cfg.search_budget - fixed) // each) if each else candidates
    return max(1, min(candidates, fits))
