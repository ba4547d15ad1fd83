"""Atomic file writes: every file the library writes goes through here."""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid


def _target(path) -> str:
    """The file that writing `path` replaces: a symbolic link's target (the link stays a
    link), and only a regular file or none -- a rename would put the file in place of a
    device, pipe or folder."""
    shown = os.fsdecode(path)  # a bytes path too, as open() takes
    target = os.path.realpath(shown)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {shown}: it is a folder; give a "
                                f"file name in it")
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, f"cannot write {shown}: it is not a regular file (a "
                      f"device, pipe or socket)")
    return target


def _temp_beside(path: str, shown):
    """(name, fd) of a new temporary file in `path`'s folder, open for writing; errors name
    `shown`, the path as the caller gave it."""
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
        raise type(exc)(exc.errno, f"cannot write {os.fsdecode(shown)}: {exc.strerror}") \
            from None


def check_writable(path) -> None:
    """Raise the OSError that writing `path` would raise, by creating and removing a file
    beside it: a folder's permission bits do not tell (root, read-only mounts, /proc)."""
    tmp, fd = _temp_beside(_target(path), path)
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside `path` for writing; on success it replaces `path` (through
    symbolic links) in one rename, on any error it is removed and `path` is left as it was."""
    target = _target(path)
    tmp, fd = _temp_beside(target, path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
