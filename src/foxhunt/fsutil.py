"""Atomic file and directory replacement: an interrupted run leaves the previous output intact."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType

RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def shown_path(path: str | Path) -> str:
    """A path as text fit for any output: bytes of a file name that are not UTF-8 (the surrogate
    escapes Python reads them as) become U+FFFD, where writing them would fail."""
    text = str(path)
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def give_normal_mode(path: Path) -> None:
    """Give a file or directory made by tempfile (private: 0600/0700) the mode a plain open() or
    mkdir() would have given it under the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        give_normal_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BackgroundWriter:
    """Writes text files under `root` from one background thread, in the order they are given.

    Opening, writing and closing a file release the GIL, so a build renders the next files while the
    last ones are written (each of a pack's ~100k small files costs ~0.3 ms of system calls). At most
    `max_pending` characters wait (memory stays bounded; a larger file waits alone). Use it as a context
    manager: leaving the block waits for every write; the first failed write (an `OSError`) is raised
    there, or by the next `write` call.
    """

    def __init__(self, root: Path, max_pending: int = 64 * 1024 * 1024) -> None:
        self.root = root
        self.max_pending = max_pending
        self._queue: deque[tuple[Path, str] | None] = deque()
        self._pending = 0
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._folders: set[Path] = set()
        self._thread = threading.Thread(target=self._run, name="foxhunt-writer", daemon=True)
        self._thread.start()

    def write(self, relative: str, text: str) -> None:
        """Queue `text` for `root/relative` (folders are made as needed); blocks while the queue is full."""
        with self._changed:
            while self._error is None and self._pending and self._pending + len(text) > self.max_pending:
                self._changed.wait()
            if self._error is not None:
                raise self._error
            self._queue.append((self.root / relative, text))
            self._pending += len(text)
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                item = self._queue.popleft()
            if item is None:
                return
            path, text = item
            try:
                if self._error is None:
                    self._write(path, text)
            except BaseException as exc:  # handed to the producing thread
                self._error = exc
            with self._changed:
                self._pending -= len(text)
                self._changed.notify_all()

    def _write(self, path: Path, text: str) -> None:
        try:
            if path.parent not in self._folders:
                if not self.root.is_dir():  # removed under us: never build a partial tree anew
                    raise FileNotFoundError(
                        errno.ENOENT, "the output folder was removed while written", str(self.root)
                    )
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            with open(path, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
        except OSError as exc:
            if exc.filename is None:  # a failed write() names no file: say which one
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise

    def close(self) -> None:
        """Wait for every queued write; raise the first one that failed."""
        with self._changed:
            self._queue.append(None)
            self._changed.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._error = self._error or exc  # the block failed: drop what is still queued
        try:
            self.close()
        except BaseException:
            if exc is None:
                raise


def _leftovers(target: Path) -> list[Path]:
    return [*target.parent.glob(f".{target.name}.*.tmp"), *target.parent.glob(f".{target.name}.*.old")]


@contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold `target`'s lock (the file ``.<name>.lock`` beside it, removed afterwards) for the block: two
    runs writing the same output would remove each other's staging directory. A second run fails at
    once with `BlockingIOError` ("another foxhunt run is writing ...") instead of waiting."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    while True:
        lock = lock_path.open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise BlockingIOError(
                errno.EWOULDBLOCK, f"another foxhunt run is writing {target} (it holds {lock_path})"
            ) from None
        try:  # the holder before us may have removed the file between our open and our lock
            if os.stat(lock_path).st_ino == os.fstat(lock.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        lock.close()


class StagingError(OSError):
    """`target` could not be locked or given a staging directory (`locked_staging`)."""


@contextmanager
def locked_staging(target: Path) -> Iterator[Path]:
    """`target` locked (`output_lock`) and a new staging directory for its replacement (`staging_dir`),
    for the block. A failure to lock or to stage is raised as `StagingError`, so that a caller can tell
    "cannot create the output" from an error while writing it."""
    with ExitStack() as locked:
        try:
            locked.enter_context(output_lock(target))
            staged = staging_dir(target)
        except OSError as exc:
            raise StagingError(exc.errno, exc.strerror or str(exc), exc.filename) from None
        yield staged


def staging_dir(target: Path) -> Path:
    """A new empty directory beside `target` to build its replacement in; removes what a killed run left."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in _leftovers(target):
        shutil.rmtree(leftover, ignore_errors=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    give_normal_mode(staged)
    return staged


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: file system or kernel without the flag
        return False
    raise OSError(errno, os.strerror(errno), str(a))


def replace_dir(staged: Path, target: Path) -> None:
    """Move `staged` to `target`. An existing `target` is swapped out atomically where the system allows
    it (otherwise moved aside first) and removed once the new one is in place."""
    if not target.exists():
        os.replace(staged, target)
        return
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now holds the previous output
        return
    previous = staged.with_suffix(".old")
    os.replace(target, previous)
    try:
        os.replace(staged, target)
    except BaseException:
        os.replace(previous, target)
        raise
    shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def swap_in(staged: Path, target: Path) -> Iterator[Path]:
    """Fill `staged` (from `staging_dir(target)`) in the block; it replaces `target` when the block ends
    normally (`replace_dir`) and is removed when anything is raised, `target` left as it was."""
    try:
        yield staged
        replace_dir(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
