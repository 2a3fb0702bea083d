"""`scorer vocab`: build and inspect a vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scorer.cli.app import TextCols, app


@app.command("vocab")
def vocab_command(
    data: Annotated[
        str, typer.Argument(help="Reviews: CSV, Parquet or NDJSON (file, folder, glob, URL).")
    ],
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
    from scorer.train.vocab_job import DEFAULT_TEXT_COLUMNS, build_vocab_file

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
