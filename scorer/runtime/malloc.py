"""glibc malloc settings for the scorer's long-running processes (Linux with glibc only;
no-ops elsewhere).

Two problems, one per command:

- ``scorer run``: glibc gives each thread its own arena and rarely returns their memory, so a
  long multi-threaded run's resident memory creeps up (``limit_arenas``).
- ``scorer train`` on CPU: every step allocates and frees the same large activation and
  gradient buffers (one LSTM step over a 128 x 400 batch holds over 100 MB). Above glibc's
  mmap threshold, each is a fresh ``mmap`` whose pages the kernel must zero on first touch,
  and freeing unmaps them again: on this project's 2-core VM the kernel time that costs
  exceeded the arithmetic (``benchmarks/train_malloc.py``). Serving them from the heap and
  keeping freed memory there for the next step removes it (``keep_freed_memory``).
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# The largest value mallopt's int argument takes: allocations up to 2 GiB come from the heap.
HEAP_LIMIT = 2**31 - 1
# Set by the user, these take precedence over anything set here.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def limit_arenas(arenas: int = 2) -> bool:
    """At most ``arenas`` malloc arenas, so a long multi-threaded run's memory stays flat.
    True when set."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_ARENA_MAX, arenas) == 1)


def keep_freed_memory(limit: int = HEAP_LIMIT) -> bool:
    """Serve allocations up to ``limit`` bytes from the heap and never shrink it, so freed
    buffers are reused by the next training step instead of being unmapped and faulted in
    again. The process keeps its peak memory until it exits, which a training process reaches
    on its first steps anyway. Left alone when the user tunes malloc through the environment.
    True when set."""
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return libc.mallopt(M_MMAP_THRESHOLD, limit) == 1 and (
        libc.mallopt(M_TRIM_THRESHOLD, HEAP_LIMIT) == 1
    )
