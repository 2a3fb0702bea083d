"""Errors a user can fix: the CLI prints them as one line and exits 1, without a traceback."""


class UserError(Exception):
    """Bad input, usage or environment; anything else is a bug and keeps its traceback."""
