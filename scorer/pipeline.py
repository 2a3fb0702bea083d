"""A bounded, threaded producer/consumer pipeline: stages overlap, the slowest sets the pace.

polars, numpy and onnxruntime release the GIL in their kernels, so plain threads overlap
reading, tokenizing, inference and writing. Queues hold at most ``depth`` items, which bounds
memory; an error in any stage stops the others and is re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_DONE = object()


@dataclass
class _Failed:
    error: BaseException


class Pipeline:
    def __init__(self, stages: Sequence[tuple[str, Callable[[Any], Any]]], depth: int = 1):
        self.stages = list(stages)
        self.depth = depth
        self.seconds: dict[str, float] = {"read": 0.0, **{name: 0.0 for name, _ in stages}}
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

    def _work(self, name: str, fn: Callable, inbox: queue.Queue, out: queue.Queue) -> None:
        while True:
            item = self._get(inbox)
            if item is _DONE or isinstance(item, _Failed):
                self._put(out, item)
                return
            began = time.perf_counter()
            try:
                result = fn(item)
            except BaseException as exc:
                self._put(out, _Failed(exc))
                return
            self.seconds[name] += time.perf_counter() - began
            if not self._put(out, result):
                return

    def run(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yield the last stage's results in input order."""
        queues = [queue.Queue(maxsize=self.depth) for _ in range(len(self.stages) + 1)]
        threads = [threading.Thread(target=self._feed, args=(items, queues[0]), daemon=True)]
        for i, (name, fn) in enumerate(self.stages):
            threads.append(
                threading.Thread(
                    target=self._work, args=(name, fn, queues[i], queues[i + 1]), daemon=True
                )
            )
        for thread in threads:
            thread.start()
        try:
            while True:
                item = self._get(queues[-1])
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=5)
