"""The `scorer` command line: a thin Typer layer, one module per command, over typed functions
that tests import (``scorer.engines``, ``scorer.train``, ``scorer.export``)."""

from scorer.cli import evaluate, export, profile, run, train, vocab  # noqa: F401  (each adds its command)
from scorer.cli.app import INTERNAL, INTERRUPTED, IO_ERROR, app, main

__all__ = ["INTERNAL", "INTERRUPTED", "IO_ERROR", "app", "main"]
