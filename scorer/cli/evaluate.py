"""`scorer eval`: metrics of a model on labelled reviews."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scorer.cli.app import TextCols, app


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
    from scorer.engines.local.evaluate import EvalJob, evaluate, format_metrics

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
