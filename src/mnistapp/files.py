"""File helpers shared by data materialisation and run bookkeeping (no heavy imports)."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISSOCK: "a socket",
}


class NotARegularFileError(OSError):
    """The destination of a write exists and is not a regular file (a device, FIFO, directory)."""


def _check_destination(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    # A symbolic link is replaced, never followed: renaming over it leaves its target alone.
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return
    kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
    raise NotARegularFileError(f"refusing to write {path}: it exists and is {kind}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename, so a crash never leaves half a file.

    A destination that exists and is not a regular file is refused (NotARegularFileError):
    renaming over ``/dev/null`` would replace the device with a file for every program on the
    machine. The temp file is opened like any other (not with ``mkstemp``, which makes it
    owner-only), so the result has the usual permissions under the user's umask.
    """
    path = Path(path)
    _check_destination(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
