"""The `scorer` app: its options shared by commands, and the entry point that turns every
outcome into an exit code.

Exit codes: 0 done; 1 bad input or usage (one line on stderr, no traceback); 3 the input
drifted from the model's profile and --fail-on-drift was given (the output is written); 70 internal
error and 74 operating-system I/O error (both with their traceback; a partial output stays
resumable); 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from typing import Annotated

import typer
from typer.exceptions import TyperException

from scorer import __version__
from scorer.errors import DriftFailed, UserError

INTERRUPTED = 130
DRIFTED = 3  # --fail-on-drift: the scores are written, the input drifted
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
    except DriftFailed as exc:
        typer.echo(f"scorer: drift: {exc}", err=True)
        code = DRIFTED
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
