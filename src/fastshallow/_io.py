"""Atomic file writes: every file the library writes goes through here."""
from __future__ import annotations

import contextlib
import os
import uuid


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside `path` for writing; on success it replaces `path` in one
    rename, on any error it is removed and `path` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Not tempfile.mkstemp: it creates files only the owner may read.  Mode 0o666 lets the
    # umask decide, as a plain open() would.
    name = f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp = os.path.join(folder, name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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
