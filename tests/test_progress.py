"""Progress in a log file: a plain line every 30 s or 10% (whichever first), never a bar."""

from __future__ import annotations

import io

import pytest

from scorer.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("total", "step_rows", "step_s", "steps", "lines"),
    [
        (1000, 10, 0.1, 100, 10),  # fast: one line per 10%
        (1000, 1, 10.0, 9, 3),  # slow: one line per 30 s (at 30, 60, 90 s)
        (None, 100, 10.0, 9, 3),  # unknown total: every 30 s, no ETA
    ],
)
def test_plain_lines_at_a_steady_pace(total, step_rows, step_s, steps, lines) -> None:
    stream, clock = io.StringIO(), Clock()
    with Progress(total, "rows", "scoring", stream=stream, clock=clock) as progress:
        for _ in range(steps):
            clock.now += step_s
            progress.update(step_rows)
    printed = stream.getvalue().splitlines()
    assert len(printed) == lines
    assert all(line.startswith("scoring: ") and "rows/s" in line for line in printed)
    assert all(("ETA" in line) == (total is not None) for line in printed)
    assert "\r" not in stream.getvalue()


def test_quiet_prints_nothing_and_line_reports_rate_and_eta() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(400, "rows", "scoring", stream=stream, clock=clock, quiet=True)
    clock.now = 2.0
    progress.update(100)
    assert stream.getvalue() == ""
    assert progress.line() == "scoring: 100/400 rows (25.0%), 50 rows/s, ETA 6s"


def test_a_terminal_gets_a_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    with Progress(10, "rows", "scoring", stream=stream) as progress:
        progress.update(5)
    text = stream.getvalue()
    assert "scoring:" in text and "rows/s" in text and "\r" in text  # a bar, redrawn in place
