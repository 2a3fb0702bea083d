"""scorer.io.files: umask-safe temporary files, fsync-before/after-rename, directory publishing, and
the one-writer output lock (checked against a second real process)."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scorer.errors import UserError
from scorer.io import files as io
from scorer.io.files import (
    OutputLock,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    lock_output,
    make_temp_dir,
    publish_dir,
)

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, **kwargs)


@pytest.fixture
def no_umask(monkeypatch):
    """os.umask changes the mask process-wide; the helpers must never call it."""

    def refuse(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", refuse)


# -- umask ----------------------------------------------------------------------------------


def test_modes_follow_the_process_umask_without_calling_umask(tmp_path):
    code = f"""
        import os, stat
        from pathlib import Path
        os.umask(0o027)
        def refuse(mask):
            raise AssertionError("os.umask called")
        os.umask = refuse
        from scorer.io.files import (
            atomic_write_bytes, atomic_write_text, make_temp_dir, publish_dir,
        )
        base = Path({str(tmp_path)!r})
        atomic_write_text(base / "a.txt", "x")
        atomic_write_bytes(base / "b.bin", b"x")
        d = make_temp_dir(base / "model")
        (d / "f").write_text("x")
        publish_dir(d, base / "model")
        for name in ("a.txt", "b.bin", "model"):
            print(name, oct(stat.S_IMODE((base / name).stat().st_mode)))
    """
    proc = _python(code, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    modes = dict(line.split() for line in out.splitlines())
    assert modes == {"a.txt": "0o640", "b.bin": "0o640", "model": "0o750"}


def test_helpers_never_call_umask(tmp_path, no_umask):
    atomic_write_text(tmp_path / "a", "x")
    publish_dir(make_temp_dir(tmp_path / "d"), tmp_path / "d")
    with lock_output(tmp_path / "d"):
        pass
    assert (tmp_path / "a").read_text() == "x"


# -- fsync order ----------------------------------------------------------------------------


@pytest.fixture
def events(monkeypatch):
    """Records ('fsync', inode) and ('replace', src name, dst name) in call order."""
    log: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst):
        log.append(("replace", Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def test_file_is_fsynced_before_the_rename_and_directory_after(tmp_path, events):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "hello")
    file_ino, dir_ino = target.stat().st_ino, tmp_path.stat().st_ino  # rename keeps the inode
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0] == ("fsync", file_ino)
    assert events[1][2] == "out.txt" and events[1][1].startswith(".out.txt.")
    assert events[2] == ("fsync", dir_ino)


def test_publish_dir_fsyncs_contents_before_and_parent_after(tmp_path, events):
    (tmp_path / "out").mkdir()
    new = make_temp_dir(tmp_path / "out")
    (new / "sub").mkdir()
    (new / "a").write_text("a")
    (new / "sub" / "b").write_text("b")
    publish_dir(new, tmp_path / "out")
    out = tmp_path / "out"
    inner = {p.stat().st_ino for p in (out, out / "sub", out / "a", out / "sub" / "b")}
    rename_in = events.index(("replace", new.name, "out"))
    assert ("replace", "out", ".out.old") in events[:rename_in]
    assert {e[1] for e in events[:rename_in] if e[0] == "fsync"} == inner
    assert events[rename_in + 1 :] == [("fsync", tmp_path.stat().st_ino)]


# -- failures leave the original and no temp file ---------------------------------------------


def _fail_in_body(monkeypatch):
    def body(tmp: Path):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    return body


def _fail_in_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    return lambda tmp: tmp.write_bytes(b"new")


def _fail_in_replace(monkeypatch):
    def replace(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", replace)
    return lambda tmp: tmp.write_bytes(b"new")


def _fail_with_other_error(monkeypatch):
    def body(tmp: Path):
        raise KeyboardInterrupt

    return body


@pytest.mark.parametrize(
    ("make_body", "error"),
    [
        (_fail_in_body, OSError),
        (_fail_in_fsync, OSError),
        (_fail_in_replace, OSError),
        (_fail_with_other_error, KeyboardInterrupt),
    ],
    ids=["enospc-writing", "enospc-fsync", "eio-rename", "interrupt"],
)
def test_failure_keeps_the_original_and_leaves_no_temp(tmp_path, monkeypatch, make_body, error):
    target = tmp_path / "out.txt"
    target.write_text("original")
    body = make_body(monkeypatch)
    with pytest.raises(error), atomic_path(target) as tmp:
        body(tmp)
    assert target.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("existing", [None, "file"])
def test_atomic_write_creates_or_replaces(tmp_path, existing):
    target = tmp_path / "t"
    if existing == "file":
        target.write_bytes(b"old")
    atomic_write_bytes(target, b"\x00new")
    assert target.read_bytes() == b"\x00new"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_temp_names_are_hidden_random_and_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "x.csv") as a, atomic_path(tmp_path / "x.csv") as b:
        assert a != b and a.parent == tmp_path == b.parent
        assert a.name.startswith(".x.csv.") and a.name.endswith(".tmp")
        assert a.read_bytes() == b""  # created exclusively, empty


# -- publish_dir ----------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [None, "dir", "file", "stale-old"])
def test_publish_dir_replaces_and_leaves_nothing_behind(tmp_path, existing):
    out = tmp_path / "model"
    if existing in ("dir", "stale-old"):
        out.mkdir()
        (out / "old-only.txt").write_text("old")
    if existing == "file":
        out.write_text("a file")
    if existing == "stale-old":  # a crash's leftover from an earlier publish
        (tmp_path / ".model.old").mkdir()
        (tmp_path / ".model.old" / "junk").write_text("junk")
    new = make_temp_dir(out)
    (new / "config.json").write_text("{}")
    publish_dir(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_publish_dir_puts_the_old_one_back_if_the_rename_fails(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new = make_temp_dir(out)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == new:
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        publish_dir(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [new.name, "model"]


# -- the output lock ------------------------------------------------------------------------


@pytest.fixture(params=["directory", "file"])
def lock_target(request, tmp_path) -> Path:
    if request.param == "directory":
        path = tmp_path / ".out.parquet.partial"
        path.mkdir()
        return path
    return tmp_path / "out.lock"


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "lock holder exited early"
        assert time.monotonic() < deadline, "lock holder never became ready"
        time.sleep(0.02)


def test_a_live_holder_in_another_process_is_named_then_a_dead_one_is_taken_over(
    lock_target, tmp_path
):
    ready = tmp_path / "ready"
    holder = _python(
        f"""
        import time
        from pathlib import Path
        from scorer.io.files import lock_output
        with lock_output(Path({str(lock_target)!r})):
            Path({str(ready)!r}).write_text("")
            time.sleep(120)
        """
    )
    try:
        _wait_for(ready, holder)
        with pytest.raises(UserError) as caught:
            lock_output(lock_target, label="out.parquet")
        message = str(caught.value)
        assert message == (
            f"out.parquet is being written by another scorer run (pid {holder.pid}); "
            "wait for it to finish"
        )
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with lock_output(lock_target) as lock:  # the kernel dropped the dead holder's flock
        assert lock.holder() == os.getpid()


def test_two_locks_in_one_process_conflict(lock_target):
    with lock_output(lock_target) as first:
        assert first.holder() == os.getpid()
        with pytest.raises(UserError, match=rf"pid {os.getpid()}\)"):
            lock_output(lock_target)
    with lock_output(lock_target):  # released on exit
        pass


def test_close_releases_and_is_idempotent(lock_target):
    lock = lock_output(lock_target)
    lock.close()
    lock.close()
    again = OutputLock(lock_target).acquire()
    assert again.acquire() is again  # re-acquiring a held lock object is a no-op
    again.close()


def test_a_directory_lock_keeps_the_directory_and_records_the_pid_inside(tmp_path):
    partial = tmp_path / ".out.partial"
    with lock_output(partial, directory=True) as lock:  # created when missing
        assert partial.is_dir()
        assert (partial / io.PID_FILE).read_text() == f"{os.getpid()}\n"
        assert lock.holder() == os.getpid()
    assert partial.is_dir() and not (partial / io.PID_FILE).exists()


def test_a_lock_on_a_replaced_inode_is_retried(lock_target, monkeypatch):
    """Simulates the unlink race: between our open and our flock another run removed the path
    and a new one was created, so the flock guards an orphan inode and must be retried."""
    real_open = io._open_lock_target
    opened: list[int] = []

    def open_then_replace(path: Path, directory: bool) -> int:
        fd = real_open(path, directory)
        opened.append(os.fstat(fd).st_ino)
        if len(opened) == 1:
            if directory:
                os.rmdir(path)
                os.mkdir(path)
            else:
                path.unlink()
                path.write_text("")
        return fd

    monkeypatch.setattr(io, "_open_lock_target", open_then_replace)
    with lock_output(lock_target) as lock:
        assert len(opened) == 2 and opened[0] != opened[1]
        assert os.fstat(lock._fd).st_ino == lock_target.stat().st_ino
        assert lock.holder() == os.getpid()


def test_a_lock_that_never_settles_gives_up_with_a_user_error(lock_target, monkeypatch):
    monkeypatch.setattr(io, "_same_file", lambda fd, path: False)
    with pytest.raises(UserError, match="kept being replaced"):
        lock_output(lock_target)
    assert stat.S_ISDIR(lock_target.stat().st_mode) == (lock_target.suffix == ".partial")
