"""File helpers: nothing a user reads is ever half-written, lost in a crash, or written twice.

Temporary names are created with ``O_EXCL`` and an explicit mode, so the kernel applies the
umask: reading the umask needs ``os.umask``, which changes it process-wide and races with other
threads. Every rename is preceded by an fsync of the data and followed by an fsync of the parent
directory; without both, a crash soon after the rename can leave an empty or missing file under
the final name (ext4/xfs delayed allocation).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from scorer.errors import UserError

PID_FILE = "lock.pid"  # inside a locked directory: who holds it, readable without the lock
_LOCK_ATTEMPTS = 10


def file_sha256(path: Path) -> str:
    """A file's sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _temp_name(beside: Path) -> Path:
    return beside.with_name(f".{beside.name}.{secrets.token_hex(6)}.tmp")


def _fsync(path: Path | str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path | str) -> None:
    """Flush a file's contents to disk, so a later rename never publishes unwritten data."""
    _fsync(path, os.O_RDONLY)


def fsync_dir(path: Path | str) -> None:
    """Flush a directory's entries (a rename or create in it) to disk."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a new empty temporary file beside ``path``; on success it is fsynced and renamed
    over ``path`` (then the directory is fsynced); on failure it is removed and ``path`` kept."""
    path = Path(path)
    while True:
        tmp = _temp_name(path)
        try:  # mode 0o666 & ~umask, applied by the kernel
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def make_temp_dir(beside: Path) -> Path:
    """A new temporary directory next to ``beside`` (mode 0o777 & ~umask); the caller removes
    it, or publishes it with :func:`publish_dir`."""
    beside = Path(beside)
    while True:
        path = _temp_name(beside)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish_dir(tmp_dir: Path, out: Path) -> None:
    """Move a fully written ``tmp_dir`` to ``out`` durably, replacing an existing ``out``.

    Every file and directory inside is fsynced first, so ``out`` never appears with missing
    data. An existing ``out`` is moved aside, the new one renamed in and the parent fsynced
    before the old one is deleted; if the rename-in fails the old one is put back."""
    tmp_dir, out = Path(tmp_dir), Path(out)
    for root, _dirs, files in os.walk(tmp_dir):
        for name in files:
            fsync_file(Path(root, name))
        fsync_dir(root)
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old")  # fixed name: a crash's leftover is reused
        _remove(old)
        os.replace(out, old)
    try:
        os.replace(tmp_dir, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    fsync_dir(out.parent)
    if old is not None:
        _remove(old)


def _open_lock_target(path: Path, directory: bool) -> int:
    """An fd to lock: the directory itself, or a lock file (created if missing)."""
    if directory:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o777)  # removed by a finished run since we looked: recreate
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the inode behind ``fd`` (not unlinked or replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino)


class OutputLock:
    """An exclusive ``flock`` on a directory (e.g. a run's ``.OUT.partial/``) or a lock file,
    so one output has one writer. The kernel drops it when the holder dies, so a crashed run's
    lock is taken over without any stale-lock cleanup. The holder's pid is recorded in
    ``lock.pid`` inside a directory, or in the lock file itself."""

    def __init__(self, path: Path, *, label: object = None, directory: bool | None = None) -> None:
        self.path = Path(path)
        self.label = self.path if label is None else label
        self.directory = self.path.is_dir() if directory is None else directory
        self._fd: int | None = None

    @property
    def pid_path(self) -> Path:
        return self.path / PID_FILE if self.directory else self.path

    def holder(self) -> int | None:
        """The pid recorded by the current holder, if readable."""
        try:
            return int(self.pid_path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def acquire(self) -> OutputLock:
        """Take the lock or raise UserError naming the holder. An fd locked after the path was
        unlinked or replaced guards nothing, so the inode is re-checked and the open retried."""
        if self._fd is not None:
            return self
        for _ in range(_LOCK_ATTEMPTS):
            fd = _open_lock_target(self.path, self.directory)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = self.holder()
                raise UserError(
                    f"{self.label} is being written by another scorer run "
                    f"(pid {pid if pid is not None else 'unknown'}); wait for it to finish"
                ) from None
            if _same_file(fd, self.path):
                self._fd = fd
                self._record_pid(fd)
                return self
            os.close(fd)
        raise UserError(f"{self.label}: its lock kept being replaced; is another run cleaning up?")

    def _record_pid(self, fd: int) -> None:
        data = f"{os.getpid()}\n"
        if self.directory:
            atomic_write_text(self.pid_path, data)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data.encode("ascii"), 0)

    def close(self) -> None:
        """Release the lock (idempotent). A lock file is unlinked first: a waiter that opened it
        sees the inode change and retries on a fresh one."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.pid_path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __enter__(self) -> OutputLock:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lock_output(path: Path, *, label: object = None, directory: bool | None = None) -> OutputLock:
    """Lock ``path`` for this process's run (see :class:`OutputLock`); use it with ``with``.
    ``label`` (default ``path``) is the output named in the error message; ``directory``
    (default: whether ``path`` is one now) locks a directory, created if missing."""
    return OutputLock(path, label=label, directory=directory).acquire()
