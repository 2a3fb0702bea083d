"""The `scorer` command line: a thin Typer layer over plain functions that tests import.

Exit codes: 0 done; 1 bad input or usage (one line on stderr, no traceback); 70 internal
error and 74 operating-system I/O error (both with their traceback; a partial output stays
resumable); 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from scorer import __version__
from scorer.errors import UserError

INTERRUPTED = 130
INTERNAL = 70  # EX_SOFTWARE: a bug or an inconsistent state, with its traceback
IO_ERROR = 74  # EX_IOERR: the operating system failed a read or write (e.g. disk full)

app = typer.Typer(
    name="scorer",
    help="Predict a product review's star rating from its text, at scale.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

TextCols = Annotated[
    list[str] | None,
    typer.Option("--text-col", help="Text column (repeatable; joined with one space)."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scorer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Train, export and run review-rating models."""


@app.command("vocab")
def vocab_command(
    data: Annotated[Path, typer.Argument(help="Reviews: CSV, Parquet or NDJSON.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write vocab.json.")],
    text_col: TextCols = None,
    split_file: Annotated[
        Path | None, typer.Option(help="row,split file; only 'train' rows are counted.")
    ] = None,
    min_count: Annotated[int, typer.Option(help="Keep tokens seen at least this often.")] = 2,
    keep_whitespace: Annotated[
        bool,
        typer.Option(
            "--keep-whitespace/--drop-whitespace",
            help="Keep spaCy's whitespace tokens (the reference does).",
        ),
    ] = True,
    marks: Annotated[
        str,
        typer.Option(help="Punctuation to keep, each character a token of its own (e.g. '!?')."),
    ] = "",
) -> None:
    """Clean, tokenize and build the vocabulary of a reviews file; print a summary."""
    from scorer.vocab_job import DEFAULT_TEXT_COLUMNS, build_vocab_file

    summary = build_vocab_file(
        data,
        out,
        text_columns=text_col or list(DEFAULT_TEXT_COLUMNS),
        split_file=split_file,
        min_count=min_count,
        keep_whitespace=keep_whitespace,
        marks=marks,
    )
    typer.echo(summary.line())


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="Labelled reviews: CSV, Parquet or NDJSON.")],
    out: Annotated[Path, typer.Option("--out", help="Model directory to create.")],
    text_col: TextCols = None,
    label_col: Annotated[str, typer.Option(help="Rating column (whole numbers).")] = "Rating",
    split_file: Annotated[
        Path | None, typer.Option(help="row,split file (train/val/test); else seeded 80/10/10.")
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="fixed | packed | vectors | regression.")
    ] = None,
    vectors: Annotated[
        Path | None, typer.Option(help="GloVe-format vectors (for --variant vectors).")
    ] = None,
    reference: Annotated[
        bool, typer.Option("--reference", help="Use the reference recipe's sizes and settings.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON file with any of these options.")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="A named recipe instead of the default: hidden128 (the default before the "
            "distilled one: the hidden-128 model alone)."
        ),
    ] = None,
    bidirectional: Annotated[bool | None, typer.Option("--bidirectional/--unidirectional")] = None,
    layers: Annotated[int | None, typer.Option()] = None,
    embedding_dim: Annotated[int | None, typer.Option()] = None,
    hidden_dim: Annotated[int | None, typer.Option()] = None,
    pooling: Annotated[str | None, typer.Option(help="last | last+max.")] = None,
    dropout: Annotated[float | None, typer.Option()] = None,
    max_len: Annotated[int | None, typer.Option()] = None,
    min_count: Annotated[int | None, typer.Option()] = None,
    keep_whitespace: Annotated[
        bool | None, typer.Option("--keep-whitespace/--drop-whitespace")
    ] = None,
    marks: Annotated[
        str | None,
        typer.Option(
            help="Punctuation to keep, each character a token of its own (e.g. '!?'); "
            "'' cleans all punctuation away, as the reference recipe does. Default: none or "
            "'!?', whichever a linear model prefers on validation (config key marks_choice)."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Rows per step (default 128; on CUDA 512, see --lr)."),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate (default 3e-3; on CUDA 6e-3). Give only one of "
            "--batch-size/--lr on CUDA and the other comes from the CUDA preset."
        ),
    ] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    patience: Annotated[int | None, typer.Option(help="Epochs without val improvement.")] = None,
    expected_loss_weight: Annotated[
        float | None, typer.Option(help="Weight of the expected-rating squared error.")
    ] = None,
    tail: Annotated[
        int | None,
        typer.Option(help="Of a review longer than --max-len, keep its last TAIL tokens too."),
    ] = None,
    wide_buckets: Annotated[
        int | None,
        typer.Option(help="Linear n-gram path: bigram hash buckets (0: the LSTM alone)."),
    ] = None,
    wide_lr_scale: Annotated[
        float | None, typer.Option(help="The n-gram path's learning rate, times --lr.")
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option()] = None,
    token_dropout: Annotated[
        float | None,
        typer.Option(help="Training only: each token becomes <unk> with this probability."),
    ] = None,
    average_epochs: Annotated[
        int | None,
        typer.Option(help="Average the weights of this many epochs ending at the best one."),
    ] = None,
    blend: Annotated[
        bool | None,
        typer.Option(
            "--blend/--no-blend",
            help="After training, fit a linear model over idf-weighted n-grams on its own and "
            "blend it in, the weights chosen on validation (classification only; on by default).",
        ),
    ] = None,
    refit: Annotated[
        bool | None,
        typer.Option(
            "--refit/--no-refit",
            help="Once everything is chosen on validation, train the kept model again on the "
            "training and validation rows for the epochs early stopping chose (on by default).",
        ),
    ] = None,
    search_budget: Annotated[
        float | None,
        typer.Option(
            help="The search's size in millions of training token passes (the teacher's and "
            "the refit's count too): within it, also try the preset's variants and keep the "
            "lowest validation loss under the training objective. Planned from the data, not "
            "the clock (0: the default only)."
        ),
    ] = None,
    teacher_hidden_dim: Annotated[
        int | None,
        typer.Option(
            help="Distillation: train a model of this hidden size first and learn from its "
            "probabilities too (0: no teacher)."
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="Distillation: learn from this exported model directory's probabilities "
            "(same labels) instead of training a teacher."
        ),
    ] = None,
    distill_weight: Annotated[
        float | None,
        typer.Option(help="The teacher's soft targets' share of the cross-entropy."),
    ] = None,
    distill_temperature: Annotated[
        float | None, typer.Option(help="The teacher's soft targets' temperature.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="auto | fp32 | bf16 | fp16. auto: fp16 with a GradScaler on CUDA, fp32 on CPU; "
            "bf16 keeps the LSTM in fp32."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="torch CPU threads; default: the CPUs this process may use."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Train a rating model; epochs are chosen on validation, test is scored once."""
    import os

    # Before torch loads: its OpenMP (libgomp) reads this once. Spinning idle threads slow
    # training many times over when another job shares the CPUs; passive ones sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from scorer.data import DEFAULT_TEXT_COLUMNS
    from scorer.presets import resolve
    from scorer.train import TrainJob, train_model

    options = {k: v for k, v in locals().items() if k not in _TRAIN_NON_OPTIONS}
    model_cfg, tokenizer, train_cfg = resolve(
        options, reference=reference, config_file=config, recipe=recipe
    )
    job = TrainJob(
        data=data,
        out=out,
        model=model_cfg,
        tokenizer=tokenizer,
        train=train_cfg,
        text_columns=tuple(text_col or DEFAULT_TEXT_COLUMNS),
        label_column=label_col,
        split_file=split_file,
        vectors=vectors,
        teacher=teacher,
        overwrite=overwrite,
    )
    typer.echo(train_model(job).line())


@app.command("export")
def export_command(
    model_dir: Annotated[Path, typer.Argument(help="Model directory from `scorer train`.")],
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    graph: Annotated[
        str,
        typer.Option(
            help="The CPU graph: auto | folded (embedding folded into layer 0: faster on CPU; "
            "one-layer models) | fused (onnxruntime's LSTM op). The CUDA graph is always fused."
        ),
    ] = "auto",
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write model.int8.onnx (CPU hosts).")
    ] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Also write model.cuda.fp16.onnx (CUDA hosts).")
    ] = False,
) -> None:
    """Export one validated ONNX graph per provider (CPU, CUDA) into the model directory."""
    from scorer.export.onnx_export import export_model

    result = export_model(model_dir, opset=opset, int8=int8, fp16=fp16, graph=graph)
    typer.echo(result.line())


@app.command("run")
def run_command(
    input: Annotated[str, typer.Argument(help="Parquet file, directory or glob; CSV; NDJSON.")],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Model directory (exported). Default: $SCORER_MODEL, else the bundled "
            "English product-review model.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output Parquet file. Default: INPUT_STEM.scores.parquet."),
    ] = None,
    text_col: TextCols = None,
    keep_col: Annotated[
        list[str] | None,
        typer.Option("--keep-col", help="Input column to copy to the output (repeatable)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto | fp32 | fp16 (CUDA) | int8 (CPU).")
    ] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(help="Rows per inference call (default: 2,048 on CPU, 16,384 on CUDA)."),
    ] = None,
    chunk_rows: Annotated[int, typer.Option(help="Rows per pipeline chunk.")] = 50_000,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU inference: concurrent onnxruntime calls on slices of each batch "
            "(default: the CPUs this process may use)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Chunks tokenized and written at once (default: the CPUs this process may use)."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="local (this machine, one Parquet file) | ray (a Ray cluster or a local Ray "
            "instance, a Parquet directory; needs the scorer package's ray extra)."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join: auto | ray://HOST:PORT (default: start one)."),
    ] = None,
) -> None:
    """Score reviews into Parquet: streaming, bounded memory, resumable, one writer."""
    from scorer.run import RunJob, run_scoring

    job = RunJob(
        input=input,
        model_dir=model,
        out=out,
        text_columns=tuple(text_col) if text_col else None,
        keep_columns=tuple(keep_col) if keep_col is not None else None,
        device=device,
        precision=precision,
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        threads=threads,
        workers=workers,
        resume=resume,
        overwrite=overwrite,
        quiet=quiet,
    )
    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be local or ray, got {engine!r}")
    if engine == "local":
        if ray_address:
            raise UserError("--ray-address needs --engine ray")
        typer.echo(run_scoring(job).line())
        return
    try:
        from scorer.ray_engine import run_on_ray
    except ImportError as exc:
        raise UserError(f"--engine ray needs Ray Data: pip install 'scorer[ray]' ({exc})") from None
    typer.echo(run_on_ray(job, ray_address).line())


@app.command("eval")
def eval_command(
    input: Annotated[str, typer.Argument(help="Labelled reviews (Parquet, CSV or NDJSON).")],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model directory (default: $SCORER_MODEL, else bundled)."),
    ] = None,
    label_col: Annotated[str, typer.Option(help="Rating column.")] = "Rating",
    text_col: TextCols = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | int8.")] = "auto",
    split_file: Annotated[
        Path | None, typer.Option(help="row,split file: evaluate only the --split rows.")
    ] = None,
    split: Annotated[str, typer.Option(help="Which split of --split-file.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Accuracy, macro-F1, RMSE, MAE and the confusion matrix of a labelled file."""
    from scorer.evaluate import EvalJob, evaluate, format_metrics

    job = EvalJob(
        input=input,
        model_dir=model,
        label_column=label_col,
        text_columns=tuple(text_col) if text_col else None,
        device=device,
        precision=precision,
        split_file=split_file,
        split=split,
        quiet=quiet or as_json,
    )
    typer.echo(format_metrics(evaluate(job), as_json))


_TRAIN_NON_OPTIONS = {
    "data",
    "out",
    "text_col",
    "label_col",
    "split_file",
    "vectors",
    "teacher",
    "reference",
    "config",
    "recipe",
    "overwrite",
}


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (and exits with it when run as a script).

    1 is reserved for bad input or usage (one line, no traceback). Anything unexpected is an
    internal error: it keeps its traceback and exits INTERNAL (or IO_ERROR for an operating
    system error such as a full disk), and a partial output stays resumable.
    """
    if argv is None and threading.current_thread() is threading.main_thread():
        # Schedulers stop jobs with SIGTERM: treat it as Ctrl-C, so the run ends cleanly
        # with its partial output resumable rather than dying between two writes.
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(args=argv, standalone_mode=False)
    except TyperException as exc:  # usage errors: Typer's own click exceptions
        exc.show()  # type: ignore[attr-defined]
        code = 1
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except UserError as exc:
        typer.echo(f"scorer: error: {exc}", err=True)
        code = 1
    except Exception as exc:
        code = IO_ERROR if isinstance(exc, OSError) else INTERNAL
        traceback.print_exc()
        typer.echo(
            f"scorer: internal error (exit {code}): {type(exc).__name__}: {exc}; a partial "
            "output is kept (rerun with --resume)",
            err=True,
        )
    code = code if isinstance(code, int) else 0
    if code == INTERRUPTED:  # Typer turns Ctrl-C into Exit(130)
        typer.echo("scorer: interrupted; nothing half-written (use --resume to continue)", err=True)
    if argv is None:
        sys.exit(code)
    return code
