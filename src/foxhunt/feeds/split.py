"""Two cores for one large file: the tail of it read in a forked child process while this process
reads the head (`feeds.readers` does so for plain CSV exports of `SPLIT_MIN_BYTES` or more).

The child sends its result back through a pickle in a temporary file: a pipe would have to be
drained by a thread here, which would fight the reading thread for the GIL.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import tempfile
from collections.abc import Callable
from types import TracebackType
from typing import IO

SPLIT_MIN_BYTES = 64 * 1024 * 1024


class ChildFailed(Exception):
    """The forked child did not deliver its result (it raised, or was killed)."""


def can_fork() -> bool:
    """Whether a second core and `os.fork` are there to read a tail in parallel."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return hasattr(os, "fork") and cores >= 2


def line_start_after(raw: IO[bytes], near: int) -> int:
    """The offset of the first line that starts after byte `near` (the file's size if none does)."""
    raw.seek(near)
    raw.readline()
    return raw.tell()


class Prefix(io.RawIOBase):
    """The first `limit` bytes of a binary file, as a file of its own."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw = raw
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self.left)
        if size <= 0:
            return 0
        data = self.raw.read(size)
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)


class ForkedCall:
    """`function(*args)` run in a forked child; `result()` waits for it. Use as a context manager:
    leaving the block kills a child still running. The result travels through an unnamed temporary
    file (unlinked from the start), so nothing is left behind however either process ends."""

    def __init__(self, function: Callable[..., object], *args: object) -> None:
        self._file = tempfile.TemporaryFile(prefix="foxhunt-part-")  # noqa: SIM115 (closed by __exit__)
        try:
            self.pid: int | None = os.fork()
        except OSError:
            self._file.close()
            raise
        if self.pid == 0:  # the child: deliver the result, then leave without cleanup handlers
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                with os.fdopen(os.dup(self._file.fileno()), "wb") as out:
                    pickle.dump(function(*args), out, protocol=pickle.HIGHEST_PROTOCOL)
                code = 0
            finally:
                os._exit(code)

    def result(self) -> object:
        """The child's return value; `ChildFailed` if it raised or died."""
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise ChildFailed(f"reader process ended with status {status}")
        self._file.seek(0)
        return pickle.load(self._file)

    def __enter__(self) -> ForkedCall:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None
        self._file.close()
