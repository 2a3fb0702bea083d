"""`scorer train`: fit a rating model, choose on validation, refit on training + validation
rows, score test once, save."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from scorer.errors import UserError
from scorer.io.labelled import (
    read_labels,
    read_split_file,
    read_table,
    read_texts,
    stratified_split,
)
from scorer.nn.device import choose_runtime
from scorer.nn.model import ReviewLSTM, load_vectors
from scorer.runtime.config import ModelConfig, TokenizerConfig, TrainConfig
from scorer.runtime.cpus import available_cpus
from scorer.runtime.malloc import keep_freed_memory
from scorer.runtime.metrics import Metrics, rating_metrics
from scorer.runtime.model_dir import ModelDir, prepare_output
from scorer.runtime.profile import Profile
from scorer.text.encode import row_hashes
from scorer.text.vocab import UNK_ID
from scorer.train.blend import choose_blend, fold
from scorer.train.checkpoint import write_model_dir
from scorer.train.data import padding_stats, training_fingerprint
from scorer.train.fit import Objective, predict
from scorer.train.marks_choice import settle_tokenizer
from scorer.train.presets import (
    apply_batch_preset,
    apply_min_samples,
    search_candidates,
    search_plan,
    settle_teacher,
)
from scorer.train.refit import refit
from scorer.train.search import TRIAL_KEYS, kept_trial, run_search
from scorer.train.teacher import check_labels, read_teacher, train_teacher


@dataclass(frozen=True)
class TrainResult:
    model_dir: ModelDir
    val: Metrics
    test: Metrics | None
    best_epoch: int
    seconds: float
    refit_rows: int = 0  # training + validation rows the final model was refitted on; 0: none

    def line(self) -> str:
        test = f"test {self.test.line()}" if self.test else "no test rows"
        refit = f", refit on {self.refit_rows:,} train + val rows" if self.refit_rows else ""
        return (
            f"trained in {self.seconds:.0f}s, best epoch {self.best_epoch}{refit}; {test} "
            f"-> {self.model_dir.path}"
        )


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def _split_rows(split_file: Path | None, label_index: np.ndarray, seed: int) -> np.ndarray:
    if split_file is not None:
        return read_split_file(split_file, len(label_index))
    return stratified_split(label_index, seed=seed)


@dataclass(frozen=True)
class TrainJob:
    data: str | Path
    out: Path
    model: ModelConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    text_columns: tuple[str, ...]
    label_column: str = "Rating"
    split_file: Path | None = None
    vectors: Path | None = None
    # A model directory whose probabilities the model learns from too (scorer.train.teacher).
    teacher: Path | None = None
    overwrite: bool = False


def train_model(job: TrainJob) -> TrainResult:
    """Train ``job``'s model and write its model directory.

    Everything is chosen on the validation rows first: the marks, then (with a teacher) the
    teacher is trained or read, then the search's candidates, as many as the data's size
    plans (each early-stopped, its epoch and averaging chosen there), then the blend. The
    refit then trains what was kept on training + validation rows, with no choice left to
    make; the test rows are scored once, by the final model.
    """
    start = time.perf_counter()
    prepare_output(job.out, overwrite=job.overwrite)
    if job.model.variant == "vectors" and job.vectors is None:
        raise UserError("--variant vectors needs --vectors FILE (GloVe text format)")
    if job.teacher is not None and job.model.regression:
        raise UserError("--teacher: distillation needs a classifier (not --variant regression)")
    # The CPUs this process may use (affinity, cgroup quota), not the host's count: more
    # threads than CPUs make torch's OpenMP threads wait on each other.
    threads = job.train.threads or available_cpus()
    torch.set_num_threads(threads)
    runtime = choose_runtime(job.train.device, job.train.precision)
    if not runtime.cuda:
        # Each step's large buffers then come from the heap rather than fresh mmaps whose
        # pages the kernel zeroes every step (scorer.runtime.malloc).
        keep_freed_memory()
    cfg = settle_teacher(job.train, job.model.regression, job.teacher is not None)
    seed_everything(cfg.seed)

    frame = read_table(job.data, text=job.text_columns)
    texts = read_texts(frame, job.text_columns, job.data)
    labels = read_labels(frame, job.label_column, job.data)
    split = _split_rows(job.split_file, labels.index, cfg.seed)
    rows = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    cfg = _settle_batches(cfg, runtime, rows)
    if job.teacher is not None:
        check_labels(job.teacher, labels.values)
    print(
        f"training on {runtime.device}, {runtime.precision.line()}, {threads} CPU threads; "
        f"batch {cfg.batch_size}, lr {cfg.lr:g} ({cfg.batch_source}), {cfg.epochs} epochs at most",
        file=sys.stderr,
        flush=True,
    )

    # Every candidate is judged by the loss early stopping uses, with the user's settings
    # (cross-entropy, label-smoothed if asked, plus expected_loss_weight times the expected
    # rating's squared error; regression: squared error): the search then picks on what the
    # user asked the model to be good at, as the epochs were picked, and a candidate's own
    # training tweaks never change the yardstick. (Each candidate's per-epoch history uses
    # its own objective: the same one unless a variant changes the objective's settings.)
    # The marks' choice is judged by it too; it needs the labels, not the vocabulary. The
    # teacher's soft targets never enter it: validation rows carry none to the judge.
    labelled = replace(job.model, num_labels=len(labels.values))
    judge = Objective.of(labelled, cfg, labels.values, runtime.device)
    prepared, marks = settle_tokenizer(job.tokenizer, texts, rows, labels, runtime, judge)
    tok, vocab, sets = prepared.tokenizer, prepared.vocab, prepared.sets
    model_cfg = replace(labelled, vocab_size=len(vocab))

    def new_model(shape: ModelConfig, settings: TrainConfig) -> ReviewLSTM:
        return _new_model(job, settings, shape, vocab, labels, rows, runtime)

    teacher = None
    if job.teacher is not None:
        taught = read_teacher(job.teacher, texts, rows, sets, labels.values, runtime, threads)
        sets, teacher = taught.sets, taught.record
    elif cfg.teacher_hidden_dim:
        taught = train_teacher(new_model, cfg, model_cfg, sets, labels.values, runtime)
        sets, teacher = taught.sets, taught.record
    candidates = search_candidates(cfg)
    planned = search_plan(
        cfg,
        model_cfg.hidden_dim,
        int(sets["train"].host_lengths.sum()),
        int(sets["val"].host_lengths.sum()),
        len(candidates),
    )
    trials = run_search(
        candidates[:planned], new_model, model_cfg, sets, labels.values, runtime, judge
    )
    chosen = kept_trial(trials)
    model, cfg, objective = chosen["model"], chosen["cfg"], chosen["objective"]
    fitted, val = chosen["fitted"], chosen["val"]
    blend, blended, refitted = None, None, None
    if cfg.blend and not model_cfg.regression:
        blend, blended = choose_blend(model, sets, vocab.tokens, judge)
        fold(model, blend)
        kept = f"linear model C {blended['c']:g}" if blend.linear else "no linear path"
        print(
            f"blend: {kept}, a {blended['a']:.3f}, b {blended['b']:.3f}; "
            f"val loss {blended['val_loss']['model']:.4f} -> {blended['val_loss']['blend']:.4f}",
            file=sys.stderr,
            flush=True,
        )
        prediction = predict(model, sets["val"], labels.values, runtime, judge)
        val = rating_metrics(
            sets["val"].label_index, prediction.pred_index, prediction.expected, labels.values
        )
    if cfg.refit:
        # val (above) stays the model's before the refit: the refitted one has seen those rows.
        def fresh() -> ReviewLSTM:
            return new_model(model_cfg, cfg)

        classes = len(labels.values)
        model, refitted = refit(fresh, sets, cfg, fitted, runtime, objective, blend, classes)
    profile = validation_profile(model, sets["val"], labels.values, tok.max_len, runtime, objective)
    test = None
    if "test" in sets:
        test_pred = predict(model, sets["test"], labels.values, runtime, objective)
        test = rating_metrics(
            sets["test"].label_index, test_pred.pred_index, test_pred.expected, labels.values
        )
    seconds = time.perf_counter() - start
    # The rows the final model learned from, for `scorer eval` to recognise.
    seen = np.concatenate([rows["train"], rows["val"]]) if refitted else rows["train"]
    model_dir = write_model_dir(
        job.out,
        model=model.cpu(),
        vocab=vocab,
        tokenizer=tok,
        train=cfg,
        labels=labels.values,
        text_columns=job.text_columns,
        metrics={
            "val": val.to_dict(),
            "test": test.to_dict() if test else None,
            "best_epoch": fitted.best_epoch,
            "history": fitted.history,
            "seconds": seconds,
            "device": str(runtime.device),
            # What really ran, per op (see scorer.nn.device).
            "precision": runtime.precision.to_dict(),
            "batch": {"batch_size": cfg.batch_size, "lr": cfg.lr, "source": cfg.batch_source},
            "threads": threads,
            "padding_fraction": padding_stats(sets["train"].host_lengths, cfg.batch_size, cfg.seed),
            "rows": {name: len(r) for name, r in rows.items()},
            "search": [{k: t[k] for k in (*TRIAL_KEYS, "best_epoch", "seconds")} for t in trials],
            "search_plan": {"candidates": len(candidates), "planned": planned},
            "blend": blended,
            # The final model's training: "val" above is the model's before it.
            "refit": refitted,
            "marks": marks,
            "teacher": teacher,
        },
        overwrite=job.overwrite,
        training=training_fingerprint(job.data, job.split_file, rows),
        fingerprint=row_hashes(texts.gather(seen)),
        profile=profile,
    )
    refit_rows = int(refitted["rows"]) if refitted else 0
    return TrainResult(model_dir, val, test, fitted.best_epoch, seconds, refit_rows)


def validation_profile(model, val, labels, max_len: int, runtime, objective) -> Profile:
    """The validation rows as the final model sees them: what `scorer run` measures drift
    against (with a refit, the model has learned from these rows, so its predicted shares
    are a little sharper than on new reviews; the thresholds sit far above that)."""
    prediction = predict(model, val, labels, runtime, objective)
    unknown = int((val.ids == UNK_ID).sum().item())
    return Profile.of(
        labels, max_len, val.host_lengths, unknown, prediction.pred_index, prediction.expected
    )


def _settle_batches(cfg: TrainConfig, runtime, rows: dict[str, np.ndarray]) -> TrainConfig:
    """Batch size and rate left to presets, and small data's extra epochs: they depend on the
    device and the data, known only now."""
    cfg = apply_batch_preset(cfg, runtime.device.type, len(rows["train"]))
    if len(rows["train"]) < cfg.batch_size:
        raise UserError(
            f"{len(rows['train'])} training rows is fewer than one batch ({cfg.batch_size}, "
            f"{cfg.batch_source}); lower --batch-size or add data"
        )
    if len(rows["val"]) == 0:
        raise UserError("no validation rows: the split needs 'val' rows for early stopping")
    return apply_min_samples(cfg, len(rows["train"]))


def _new_model(job, cfg, model_cfg, vocab, labels, rows, runtime) -> ReviewLSTM:
    """A freshly initialised model on the device, seeded by ``cfg.seed``: each candidate and
    the refit start from the same weights."""
    seed_everything(cfg.seed)
    model = ReviewLSTM(model_cfg)
    if job.vectors is not None:
        matrix = load_vectors(job.vectors, vocab.tokens, model_cfg.embedding_dim, cfg.seed)
        model.embedding.weight.data.copy_(torch.from_numpy(matrix))
    if model_cfg.regression:
        # Start at the mean training rating rather than 0, so early steps learn signal.
        mean_rating = float(np.asarray(labels.values)[labels.index[rows["train"]]].mean())
        with torch.no_grad():
            model.head.bias.fill_(mean_rating)
    return model.to(runtime.device)
