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


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (and exits with it when run as a script)."""
    try:
        code = app(args=argv, standalone_mode=False)
    except TyperException as exc:  # usage errors: Typer's own click exceptions
        exc.show()  # type: ignore[attr-defined]
        code = 1
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("scorer: interrupted", err=True)
        code = 130
    except UserError as exc:
        typer.echo(f"scorer: error: {exc}", err=True)
        code = 1
    code = code if isinstance(code, int) else 0
    if argv is None:
        sys.exit(code)
    return code
