"""`scorer profile`: an input's profile against the model's, without writing scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from scorer.cli.app import TextCols, app


@app.command("profile")
def profile_command(
    input: Annotated[str, typer.Argument(help="Parquet file, directory or glob; CSV; NDJSON.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model directory (default: as `scorer run`)."),
    ] = None,
    text_col: TextCols = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the summary line goes to stderr).")
    ] = False,
    drift: Annotated[
        list[str] | None,
        typer.Option("--drift", help="A drift threshold KEY=VALUE (as `scorer run`)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Tokenize and score an input, print its profile beside the model's and the drift."""
    from scorer.engines.local.profile import ProfileJob, profile_input

    result = profile_input(
        ProfileJob(
            input=input,
            model_dir=model,
            text_columns=tuple(text_col) if text_col else None,
            device=device,
            quiet=quiet,
            drift=tuple(drift or ()),
        )
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        typer.echo(result.line(), err=True)
        return
    typer.echo(result.table())
    typer.echo(result.line())
