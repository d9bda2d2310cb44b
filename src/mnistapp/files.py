"""File helpers shared by data materialisation and run bookkeeping (no heavy imports)."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device"}
_KINDS |= {stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}


class NotARegularFileError(OSError):
    """The destination of a write exists and is not a regular file (a device, FIFO, directory)."""


@contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """A temp file beside ``path``, fsynced and renamed over it on success: a crash, full disk or
    SIGKILL leaves the old file or the new one. Not ``mkstemp`` (owner-only): the user's umask."""
    path = Path(path)
    # a symbolic link is replaced, never followed: renaming over it leaves its target alone
    mode = os.lstat(path).st_mode if os.path.lexists(path) else stat.S_IFREG
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise NotARegularFileError(f"refusing to write {path}: it exists and is {kind}")
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
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data)


def checkpoint_file(path: object) -> Path:
    """The checkpoint file ``path`` names, or one line saying why there is none. Light, so the
    entry points ask it before torch is imported (``cli.schema``) and the loader asks it again."""
    from mnistapp.errors import CheckpointError

    if not path:
        raise CheckpointError("no checkpoint given: add ckpt_path=<file>")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    return path
