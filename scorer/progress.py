"""Progress that people can see both in a terminal and in a log file.

In a terminal, a tqdm bar. When stderr is not a terminal (a nightly job's log file), tqdm is
off, so a plain line is printed at a steady pace instead: every ``every_s`` seconds or
``every_fraction`` of the total, whichever comes first, with done, rate and ETA.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

LOG_EVERY_S = 30.0
LOG_EVERY_FRACTION = 0.10


class Progress:
    """``with Progress(total, "rows", "scoring") as p: p.update(n)``."""

    def __init__(
        self,
        total: float | None,
        unit: str,
        desc: str,
        *,
        initial: float = 0,
        quiet: bool = False,
        stream: TextIO | None = None,
        every_s: float = LOG_EVERY_S,
        every_fraction: float = LOG_EVERY_FRACTION,
        clock=time.monotonic,
    ) -> None:
        self.total, self.unit, self.desc = total, unit, desc
        self.done = initial
        self.stream = stream or sys.stderr
        self.every_s, self.every_fraction = every_s, every_fraction
        self.clock = clock
        self.began = clock()
        self.initial = initial
        self._last_time = self.began
        self._last_fraction = self._fraction()
        self._bar = None
        self._plain = False
        if quiet:
            return
        if _is_terminal(self.stream):
            self._bar = tqdm(
                total=total,
                initial=initial,
                unit=unit,
                unit_scale=True,
                desc=desc,
                leave=False,
                file=self.stream,
            )
        else:
            self._plain = True

    def _fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def update(self, amount: float) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
        elif self._plain:
            now = self.clock()
            fraction = self._fraction()
            due = now - self._last_time >= self.every_s
            if self.total and fraction - self._last_fraction >= self.every_fraction - 1e-9:
                due = True
            if due:
                self._last_time, self._last_fraction = now, fraction
                self.stream.write(self.line(now) + "\n")
                self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """``desc: 1,234,000/4,000,000 rows (30.9%), 41,133 rows/s, ETA 67s``."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.began, 1e-9)
        rate = (self.done - self.initial) / elapsed
        if self.total:
            left = max(self.total - self.done, 0)
            eta = f", ETA {left / rate:,.0f}s" if rate > 0 else ""
            done = f"{self.done:,.0f}/{self.total:,.0f} {self.unit} ({self._fraction():.1%})"
        else:
            eta, done = "", f"{self.done:,.0f} {self.unit}"
        return f"{self.desc}: {done}, {rate:,.0f} {self.unit}/s{eta}"

    def write(self, message: str) -> None:
        """A message that does not break the bar (tqdm.write in a terminal)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
