"""glibc malloc settings (scorer.runtime.malloc): what is set, when it stands aside, and its
effect."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from scorer.runtime import malloc
from scorer.train import job as train_module
from tests.helpers import write_reviews
from tests.test_train import job

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


@pytest.fixture
def libc(monkeypatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(malloc, "_glibc", lambda: fake)
    for name in malloc.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return fake


def test_keep_freed_memory_raises_the_mmap_and_trim_thresholds(libc) -> None:
    assert malloc.keep_freed_memory(1 << 30)
    assert libc.calls == [
        (malloc.M_MMAP_THRESHOLD, 1 << 30),
        (malloc.M_TRIM_THRESHOLD, malloc.HEAP_LIMIT),
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("MALLOC_TRIM_THRESHOLD_", "0"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),
        ("GLIBC_TUNABLES", ""),
    ],
)
def test_a_users_own_malloc_settings_are_left_alone(libc, monkeypatch, variable, value) -> None:
    monkeypatch.setenv(variable, value)
    assert not malloc.keep_freed_memory()
    assert libc.calls == []


@pytest.mark.parametrize("call", [malloc.keep_freed_memory, malloc.limit_arenas])
def test_without_glibc_nothing_is_set(monkeypatch, call) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    for name in malloc.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert malloc._glibc() is None
    assert call() is False


def test_a_refused_setting_is_reported(libc) -> None:
    libc.answer = 0
    assert not malloc.keep_freed_memory()
    assert not malloc.limit_arenas(2)


# Allocates, fills and frees a 64 MB buffer ten times; prints the minor page faults taken.
# Straight from libc, not numpy: numpy asks for huge pages, 512 times fewer faults.
FAULTS = """
import ctypes, resource, sys
from scorer.runtime.malloc import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def touch():
    p = libc.malloc(1 << 26)
    ctypes.memset(p, 1, 1 << 26)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_buffers_are_reused_without_new_page_faults() -> None:
    """Glibc's default serves each 64 MB array from a fresh mmap (16,384 pages to fault in
    each time); kept on the heap, the second and later ones reuse the first one's pages."""
    env = {k: v for k, v in os.environ.items() if k not in malloc.USER_SETTINGS}
    faults = {}
    for side in ("default", "kept"):
        out = subprocess.run(
            [sys.executable, "-c", FAULTS, side], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        faults[side] = int(out.stdout)
    pages = 10 * (1 << 26) // 4096
    assert faults["default"] > 0.9 * pages
    assert faults["kept"] < 0.1 * pages


def test_cpu_training_keeps_freed_memory(tmp_path, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: seen.append(True) or True)
    data = write_reviews(tmp_path / "reviews.parquet", n=120)
    train_module.train_model(job(tmp_path, data, epochs=1, device="cpu"))
    assert seen == [True]
