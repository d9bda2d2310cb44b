"""File helpers shared by data materialisation and run bookkeeping (no heavy imports)."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

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


@contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path`` to write; on success fsync it and rename it over ``path``.

    The temp file is in the destination's own folder, so the rename is atomic (never a copy
    across filesystems): a crash, a full disk or SIGKILL leaves the old file or the new one,
    never half a file, and a failed write removes the temp file. A destination that exists and
    is not a regular file is refused (NotARegularFileError): renaming over ``/dev/null`` would
    replace the device for every program on the machine. The temp file is opened like any other
    (not with ``mkstemp``, which makes it owner-only), so the result gets the user's umask.
    """
    path = Path(path)
    _check_destination(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself survive a power cut
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_open`."""
    with atomic_open(path) as f:
        f.write(data)
