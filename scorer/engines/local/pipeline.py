"""A bounded, ordered pipeline of stages, each run by one or more worker threads.

Items flow read -> stage 1 -> ... -> consumer in input order. A stage with ``workers > 1``
processes that many items at once (the tokenizer kernels, onnxruntime, pyarrow and numpy
release the GIL, so threads really run in parallel) and its results are handed on in input
order. At most ``workers + depth`` items wait at each stage, which bounds memory. An error
in any stage stops the others and is re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

_DONE = object()


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Any], Any]
    workers: int = 1


@dataclass
class _Failed:
    error: BaseException


class Pipeline:
    def __init__(self, stages: Sequence[Stage], depth: int = 1) -> None:
        self.stages = list(stages)
        self.depth = depth
        # Busy seconds per stage, summed over its workers.
        self.seconds: dict[str, float] = {"read": 0.0, **{s.name: 0.0 for s in stages}}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _put(self, q: queue.Queue, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue) -> Any:
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def _feed(self, items: Iterable[Any], out: queue.Queue) -> None:
        try:
            iterator = iter(items)
            while True:
                began = time.perf_counter()
                item = next(iterator, _DONE)
                self.seconds["read"] += time.perf_counter() - began
                if not self._put(out, item) or item is _DONE:
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(out, _Failed(exc))

    def _timed(self, stage: Stage, item: Any) -> Any:
        began = time.perf_counter()
        result = stage.fn(item)
        with self._lock:
            self.seconds[stage.name] += time.perf_counter() - began
        return result

    def _dispatch(self, stage: Stage, pool: ThreadPoolExecutor, inbox, out) -> None:
        """Take items in order, start each on the stage's pool, and pass the futures on in
        the same order; the next stage waits for each in turn."""
        while True:
            item = self._get(inbox)
            if isinstance(item, Future):
                try:
                    item = item.result()
                except BaseException as exc:
                    item = _Failed(exc)
            if item is _DONE or isinstance(item, _Failed):
                self._put(out, item)
                return
            if not self._put(out, pool.submit(self._timed, stage, item)):
                return

    def run(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yield the last stage's results in input order."""
        # A stage's outbox holds its running items: as many as its workers, plus depth.
        queues = [queue.Queue(maxsize=self.depth)]
        queues += [queue.Queue(maxsize=s.workers + self.depth - 1) for s in self.stages]
        pools = [
            ThreadPoolExecutor(s.workers, thread_name_prefix=f"scorer-{s.name}")
            for s in self.stages
        ]
        threads = [threading.Thread(target=self._feed, args=(items, queues[0]), daemon=True)]
        for i, (stage, pool) in enumerate(zip(self.stages, pools, strict=True)):
            threads.append(
                threading.Thread(
                    target=self._dispatch,
                    args=(stage, pool, queues[i], queues[i + 1]),
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        try:
            while True:
                item = self._get(queues[-1])
                if isinstance(item, Future):
                    item = item.result()
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=5)
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)
