"""The `scorer` command line: a thin Typer layer over plain functions that tests import.

Exit codes: 0 done; 1 bad input or usage (one line on stderr, no traceback); 130 interrupted;
any other non-zero code is an internal error and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from scorer import __version__
from scorer.errors import UserError

INTERRUPTED = 130

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
        bool, typer.Option(help="Keep spaCy's whitespace tokens (the reference does).")
    ] = True,
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
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    patience: Annotated[int | None, typer.Option(help="Epochs without val improvement.")] = None,
    expected_loss_weight: Annotated[
        float | None, typer.Option(help="Weight of the expected-rating squared error.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto | fp32 | bf16 | fp16.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Train a rating model; epochs are chosen on validation, test is scored once."""
    from scorer.data import DEFAULT_TEXT_COLUMNS
    from scorer.presets import resolve
    from scorer.train import TrainJob, train_model

    options = {k: v for k, v in locals().items() if k not in _TRAIN_NON_OPTIONS}
    model_cfg, tokenizer, train_cfg = resolve(options, reference=reference, config_file=config)
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
        overwrite=overwrite,
    )
    typer.echo(train_model(job).line())


@app.command("export")
def export_command(
    model_dir: Annotated[Path, typer.Argument(help="Model directory from `scorer train`.")],
    out: Annotated[
        Path | None, typer.Option(help="ONNX file to write (default MODEL_DIR/model.onnx).")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write model.int8.onnx (CPU hosts).")
    ] = False,
    graph: Annotated[
        str,
        typer.Option(
            help="auto | folded (embedding folded into layer 0: faster on CPU; one-layer "
            "models) | fused (onnxruntime's LSTM op). auto: folded when the model allows."
        ),
    ] = "auto",
) -> None:
    """Export to ONNX (dynamic batch and sequence axes) and validate it against PyTorch."""
    from scorer.export.onnx_export import export_model

    typer.echo(export_model(model_dir, out, opset=opset, int8=int8, graph=graph).line())


@app.command("run")
def run_command(
    input: Annotated[str, typer.Argument(help="Parquet file, directory or glob; CSV; NDJSON.")],
    model: Annotated[Path, typer.Option("--model", help="Model directory (exported).")],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    text_col: TextCols = None,
    keep_col: Annotated[
        list[str] | None,
        typer.Option("--keep-col", help="Input column to copy to the output (repeatable)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | int8.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Rows per inference batch.")] = 2048,
    chunk_rows: Annotated[int, typer.Option(help="Rows per pipeline chunk.")] = 50_000,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads: tokenizer threads, and concurrent onnxruntime calls on "
            "slices of each batch (default: all cores)."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Score reviews into Parquet: streaming, bounded memory, resumable."""
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
        resume=resume,
        overwrite=overwrite,
        quiet=quiet,
    )
    typer.echo(run_scoring(job).line())


@app.command("eval")
def eval_command(
    input: Annotated[str, typer.Argument(help="Labelled reviews (Parquet, CSV or NDJSON).")],
    model: Annotated[Path, typer.Option("--model", help="Model directory (exported).")],
    label_col: Annotated[str, typer.Option(help="Rating column.")] = "Rating",
    text_col: TextCols = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | int8.")] = "auto",
    split_file: Annotated[
        Path | None, typer.Option(help="row,split file: evaluate only the --split rows.")
    ] = None,
    split: Annotated[str, typer.Option(help="Which split of --split-file.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
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
    )
    typer.echo(format_metrics(evaluate(job), as_json))


_TRAIN_NON_OPTIONS = {
    "data",
    "out",
    "text_col",
    "label_col",
    "split_file",
    "vectors",
    "reference",
    "config",
    "overwrite",
}


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (and exits with it when run as a script)."""
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
    code = code if isinstance(code, int) else 0
    if code == INTERRUPTED:  # Typer turns Ctrl-C into Exit(130)
        typer.echo("scorer: interrupted; nothing half-written (use --resume to continue)", err=True)
    if argv is None:
        sys.exit(code)
    return code
