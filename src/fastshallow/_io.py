"""Atomic file writes: every file the library writes goes through here."""
from __future__ import annotations

import contextlib
import os
import uuid


def _temp_beside(path: str):
    """(name, fd) of a new temporary file in `path`'s folder, open for writing."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Not tempfile.mkstemp: it creates files only the owner may read.  Mode 0o666 lets the
    # umask decide, as a plain open() would.
    # The start of the name only: the whole could pass the file system's 255-byte limit.
    name = f".{os.path.basename(path)[:40]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp = os.path.join(folder, name)
    try:
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:  # the temporary name would mean nothing to the caller
        raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}") from None


def check_writable(path) -> None:
    """Raise the OSError that writing `path` would raise, by creating and removing a file
    beside it: a folder's permission bits do not tell (root, read-only mounts, /proc)."""
    tmp, fd = _temp_beside(os.fsdecode(path))
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside `path` for writing; on success it replaces `path` in one
    rename, on any error it is removed and `path` is left as it was."""
    path = os.fsdecode(path)  # a bytes path too, as open() takes
    tmp, fd = _temp_beside(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
