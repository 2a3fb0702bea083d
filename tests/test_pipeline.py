from __future__ import annotations

import threading
import time

import pytest

from scorer.engines.local.pipeline import Pipeline, Stage


@pytest.mark.parametrize(("workers", "depth"), [(1, 1), (3, 1), (2, 4)])
def test_results_in_order_through_every_stage(workers, depth) -> None:
    def jitter(x):
        time.sleep(0.002 * ((x * 7) % 3))  # later items often finish first
        return x

    pipeline = Pipeline(
        [
            Stage("double", lambda x: 2 * jitter(x), workers),
            Stage("inc", lambda x: x + 1),
            Stage("write", jitter, workers),
        ],
        depth=depth,
    )
    assert list(pipeline.run(range(60))) == [2 * i + 1 for i in range(60)]
    assert set(pipeline.seconds) == {"read", "double", "inc", "write"}


def test_a_stage_with_workers_runs_items_at_once() -> None:
    """Two workers hold two items at the same time (a barrier of 2 would block forever
    with one worker: it times out and the test fails)."""
    barrier = threading.Barrier(2, timeout=10)

    def meet(x):
        barrier.wait()
        return x

    assert list(Pipeline([Stage("meet", meet, workers=2)]).run(range(4))) == [0, 1, 2, 3]


def test_stages_overlap() -> None:
    """Stage b works on item 0 while stage a works on item 1 (no timing bound)."""
    a_started_second = threading.Event()
    b_saw_overlap = []

    def a(x):
        if x == 1:
            a_started_second.set()
            time.sleep(0.2)
        return x

    def b(x):
        if x == 0:
            b_saw_overlap.append(a_started_second.wait(timeout=10))
        return x

    assert list(Pipeline([Stage("a", a), Stage("b", b)]).run(range(3))) == [0, 1, 2]
    assert b_saw_overlap == [True]


def _pipeline_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread()
        and t.is_alive()
        and (t.name.startswith("scorer-") or t.name.startswith("Thread-"))
    ]


@pytest.mark.parametrize("where", ["source", "stage", "later stage"])
def test_an_error_anywhere_reaches_the_consumer_and_stops_the_rest(where) -> None:
    produced = []

    def source():
        for i in range(1000):
            produced.append(i)
            if where == "source" and i == 3:
                raise ValueError("bad input")
            yield i

    def stage(x):
        if where == "stage" and x == 3:
            raise ValueError("bad input")
        return x

    def later(x):
        if where == "later stage" and x == 3:
            raise ValueError("bad input")
        return x

    before = set(_pipeline_threads())
    pipeline = Pipeline([Stage("s", stage, workers=2), Stage("t", later)])
    with pytest.raises(ValueError, match="bad input"):
        list(pipeline.run(source()))
    # The rest stopped: the source was not drained, and no pipeline thread lives on.
    assert len(produced) < 20
    deadline = time.monotonic() + 10
    while set(_pipeline_threads()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(_pipeline_threads()) - before


@pytest.mark.parametrize(("workers", "depth"), [(1, 1), (2, 2)])
def test_memory_is_bounded_by_workers_and_depth(workers, depth) -> None:
    produced = []

    def source():
        for i in range(1000):
            produced.append(i)
            yield i

    results = Pipeline([Stage("s", lambda x: x, workers)], depth=depth).run(source())
    next(results)
    time.sleep(0.2)
    # Read-ahead is a few queue slots per stage, never the whole input.
    assert len(produced) <= 2 * (workers + depth) + 2
    results.close()
