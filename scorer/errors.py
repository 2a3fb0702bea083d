"""Errors a user can fix: the CLI prints them as one line and exits 1, without a traceback."""


class UserError(Exception):
    """Bad input, usage or environment; anything else is a bug and keeps its traceback."""


class DriftFailed(Exception):
    """``--fail-on-drift`` and the input drifted: the output is written, the exit code says so."""
