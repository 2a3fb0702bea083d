"""`scorer run`: score reviews on the local or the Ray engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scorer.cli.app import TextCols, app
from scorer.errors import UserError


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
    id_col: Annotated[
        str | None,
        typer.Option(
            "--id-col",
            help="Unique row id (integers or text): kept in the output with each row's text "
            "hash, so a later run can take --since this output.",
        ),
    ] = None,
    since: Annotated[
        Path | None,
        typer.Option(
            help="An earlier output of this model with --id-col: rows whose id and text are "
            "unchanged keep its scores; only new and edited rows are scored."
        ),
    ] = None,
    rescore_all: Annotated[
        bool, typer.Option(help="With --since: score every row anyway (e.g. a new model).")
    ] = False,
    drift: Annotated[
        list[str] | None,
        typer.Option(
            "--drift",
            help="A drift threshold KEY=VALUE (repeatable): unknown_ratio (2), empty_delta "
            "(0.05), psi (0.2), min_rows (500).",
        ),
    ] = None,
    fail_on_drift: Annotated[
        bool,
        typer.Option(help="Exit 3 (after writing the scores) when the input drifted."),
    ] = False,
) -> None:
    """Score reviews into Parquet: streaming, bounded memory, resumable, one writer."""
    from scorer.engines.local.run import RunJob, run_scoring

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
        id_column=id_col,
        since=since,
        rescore_all=rescore_all,
        drift=tuple(drift or ()),
        fail_on_drift=fail_on_drift,
    )
    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be local or ray, got {engine!r}")
    if engine == "local":
        if ray_address:
            raise UserError("--ray-address needs --engine ray")
        typer.echo(run_scoring(job).line())
        return
    if id_col or since or rescore_all or fail_on_drift or drift:
        raise UserError(
            "--id-col, --since, --drift and --fail-on-drift work on the local engine only: "
            "the Ray engine's tasks share no index of an earlier output and no profile; "
            "use --engine local"
        )
    try:
        from scorer.engines.ray.engine import run_on_ray
    except ImportError as exc:
        raise UserError(f"--engine ray needs Ray Data: pip install 'scorer[ray]' ({exc})") from None
    typer.echo(run_on_ray(job, ray_address).line())
