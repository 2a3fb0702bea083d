"""`scorer export`: the ONNX graphs of a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scorer.cli.app import app


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
