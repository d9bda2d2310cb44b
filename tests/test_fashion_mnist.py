"""Fashion-MNIST: the shared source chain (Debian package, download, error), data=fashion_mnist."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from mnistapp.data import sources
from mnistapp.data.datamodule import MNISTDataModule
from mnistapp.data.sources import FASHION_MNIST, DataSourceError, ensure_dataset, idx_bytes
from mnistapp.training.checkpoints import restore
from tests.helpers import compose as compose_run
from tests.helpers import synthetic_digits, tiny_overrides

NAMES = list(sources.FASHION_MNIST_MD5)
CLOTHES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
CLOTHES += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx_files(n_train: int = 60, n_test: int = 20) -> dict[str, bytes]:
    """Tiny but valid IDX files under the four official names."""
    blobs = {}
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        blobs[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        blobs[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    return blobs


@pytest.fixture
def package(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fake install of dataset-fashion-mnist (gz files) and the MD5s of its uncompressed files."""
    folder = tmp_path / "usr-share-datasets-fashion-mnist"
    folder.mkdir()
    blobs = _idx_files()
    for name, blob in blobs.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
    return folder, {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}


@pytest.fixture
def no_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Debian package is not installed (its usual folder is empty)."""
    empty = tmp_path / "not-installed"
    empty.mkdir()
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", empty)


def test_package_is_found_only_with_all_four_files(package: tuple[Path, dict]) -> None:
    folder, _ = package
    assert sources.find_fashion_mnist_package(folder) == folder
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert sources.find_fashion_mnist_package(folder) is None


def test_debian_package_is_decompressed_verified_and_stamped(
    tmp_path: Path, package: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, checksums = package
    # the usual lookup, pointed at the fake install
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", folder)
    raw = ensure_dataset(FASHION_MNIST, tmp_path / "data", checksums=checksums)
    assert raw == tmp_path / "data" / "FashionMNIST" / "raw"
    assert {name: sources.md5sum(raw / name) for name in NAMES} == checksums
    stamps = json.loads((raw / sources.STAMP_FILE).read_text())
    assert {name: stamp["md5"] for name, stamp in stamps.items()} == checksums

    # verified files are used as they are: the package is not needed again
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "gone")
    assert ensure_dataset(FASHION_MNIST, tmp_path / "data", checksums=checksums) == raw
    # a corrupted file is noticed and decompressed again from the package
    (raw / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    ensure_dataset(FASHION_MNIST, tmp_path / "data", checksums=checksums, package=folder)
    assert sources.md5sum(raw / "train-labels-idx1-ubyte") == checksums["train-labels-idx1-ubyte"]


def test_a_corrupt_package_file_is_rejected_with_a_message(
    tmp_path: Path, package: tuple[Path, dict]
) -> None:
    folder, checksums = package
    # valid gzip, wrong content: the MD5 check catches it and nothing is written
    gz = folder / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(gzip.decompress(gz.read_bytes())[:-1] + b"\x00"))
    with pytest.raises(DataSourceError, match="t10k-images-idx3-ubyte.* fails its MD5 check"):
        ensure_dataset(FASHION_MNIST, tmp_path / "data", checksums=checksums, package=folder)
    assert not (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists()
    # not gzip at all: one line that says how to reinstall
    gz.write_bytes(b"this is not gzip")
    with pytest.raises(DataSourceError) as err:
        ensure_dataset(FASHION_MNIST, tmp_path / "data", checksums=checksums, package=folder)
    assert "could not be read from" in str(err.value) and "\n" not in str(err.value)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_missing_data_is_one_line_naming_apt_get(tmp_path: Path, no_package: None) -> None:
    with pytest.raises(DataSourceError) as err:
        ensure_dataset(FASHION_MNIST, tmp_path, download=False)
    message = str(err.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "data.download=true" in message


def test_offline_download_falls_back_to_the_error(
    tmp_path: Path, no_package: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(dataset, root):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://...")

    monkeypatch.setattr(sources, "_download", offline)
    with pytest.raises(DataSourceError) as err:
        ensure_dataset(FASHION_MNIST, tmp_path, download=True)
    message = str(err.value)
    assert "\n" not in message and "the download failed: Error downloading" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_download_is_verified(tmp_path: Path, no_package: None, monkeypatch: pytest.MonkeyPatch):
    blobs = _idx_files()
    checksums = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}

    def download(dataset, root):  # what torchvision leaves: the decompressed files
        assert dataset is FASHION_MNIST
        raw = dataset.raw(root)
        raw.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            (raw / name).write_bytes(blob)

    monkeypatch.setattr(sources, "_download", download)
    raw = ensure_dataset(FASHION_MNIST, tmp_path, download=True, checksums=checksums)
    assert {name: sources.md5sum(raw / name) for name in NAMES} == checksums
    bad = dict(checksums, **{"t10k-labels-idx1-ubyte": "0" * 32})
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataSourceError, match="downloaded by torchvision fails its MD5 check"):
        ensure_dataset(FASHION_MNIST, tmp_path, download=True, checksums=bad)


def test_datamodule_reads_fashion_mnist_with_its_class_names(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, blob in _idx_files().items():
        (raw / name).write_bytes(blob)
    dm = MNISTDataModule(
        str(tmp_path),
        val_size=10,
        download=False,
        verify=False,
        dataset="fashion_mnist",
        class_names=CLOTHES,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert [len(dm.data[s][1]) for s in ("train", "val", "test")] == [50, 10, 20]
    assert dm.class_names == CLOTHES
    assert MNISTDataModule().class_names == [str(k) for k in range(10)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "kmnist"}, "data.dataset must be one of"),
        (
            {"class_names": ["a", "b"]},
            "data.class_names must be a list of data.num_classes=10 distinct",
        ),
        ({"class_names": "0123456789"}, "data.class_names must be a list"),
        ({"class_names": ["a"] * 10}, "data.class_names must be a list of .* distinct names"),
    ],
)
def test_datamodule_refuses_bad_dataset_and_names(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(**kwargs)


def test_data_fashion_mnist_config_composes() -> None:
    with initialize_config_module("mnistapp.conf", version_base="1.3"):
        cfg = compose("config", overrides=["data=fashion_mnist", "data.data_dir=/nowhere"])
    dm = instantiate(cfg.data)
    assert dm.hparams.dataset == "fashion_mnist" and dm.class_names == CLOTHES
    assert type(dm.hparams.class_names) is list  # plain, for weights_only checkpoints
    assert (dm.hparams.mean, dm.hparams.std) == (0.2860, 0.3530)


def test_the_real_debian_package_matches_the_official_md5s(tmp_path: Path) -> None:
    folder = sources.find_fashion_mnist_package()
    if folder is None:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    raw = ensure_dataset(FASHION_MNIST, tmp_path, download=False)
    dm = MNISTDataModule(str(tmp_path), download=False, dataset="fashion_mnist")
    dm.prepare_data()  # verified against the official MD5s (stamped by the call above)
    dm.setup("fit")
    assert [len(dm.data[s][1]) for s in ("train", "val", "test")] == [55000, 5000, 10000]
    labels = torch.cat([dm.data["train"][1], dm.data["val"][1]])
    assert torch.bincount(labels).tolist() == [6000] * 10
    assert sorted(p.name for p in raw.iterdir()) == sorted([*NAMES, sources.STAMP_FILE])


def test_train_eval_predict_name_the_clothes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mnistapp.cli.evaluate import RESULT_KEYS as EVAL_KEYS
    from mnistapp.cli.evaluate import evaluate
    from mnistapp.cli.predict import RESULT_KEYS as PREDICT_KEYS
    from mnistapp.cli.predict import predict, read_inputs
    from mnistapp.cli.task import run_on_checkpoint, run_task
    from mnistapp.cli.train import train
    from mnistapp.errors import InputError

    data = tmp_path / "data"
    raw = data / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, blob in _idx_files(400, 200).items():
        (raw / name).write_bytes(blob)
    logs = tmp_path / "logs"
    fashion = ["data=fashion_mnist", *tiny_overrides(data, logs)]
    run_dir = tmp_path / "train"
    caplog.set_level("INFO")
    run_task(train, compose_run(*fashion, "trainer.max_epochs=1", output_dir=run_dir), ())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert trained["class_names"] == CLOTHES
    assert list(trained["test/f1_by_class"]) == CLOTHES
    assert "Test F1 per class: T-shirt/top " in caplog.text

    # the checkpoint carries the names: eval and predict know them without being told
    ckpt = Path(trained["best_ckpt"])
    assert restore(ckpt).module.class_names == CLOTHES
    evaluation = [o for o in fashion if not o.startswith("callbacks.")]

    def run_eval(*overrides: str, to: str) -> dict:
        cfg = compose_run(
            f"ckpt_path={ckpt}", *overrides, config_name="eval", output_dir=tmp_path / to
        )
        run_on_checkpoint("eval", evaluate, cfg, EVAL_KEYS)
        return json.loads((tmp_path / to / "metrics.json").read_text())

    evaluated = run_eval(*evaluation, to="eval")
    assert evaluated["test/f1_by_class"] == trained["test/f1_by_class"]
    # tested on MNIST-named data by mistake: a warning, and the checkpoint's names are kept
    mnist_raw = data / "MNIST" / "raw"
    mnist_raw.mkdir(parents=True)
    for name in NAMES:
        (mnist_raw / name).write_bytes((raw / name).read_bytes())
    caplog.clear()
    assert run_eval(*evaluation[1:], to="eval_mnist")["class_names"] == CLOTHES
    assert "The checkpoint's classes (T-shirt/top, " in caplog.text

    inputs = tmp_path / "inputs.npy"
    np.save(inputs, synthetic_digits(4, seed=3)[0])
    cfg = compose_run(
        f"ckpt_path={ckpt}",
        f"inputs={inputs}",
        f"paths.log_dir={logs}",
        config_name="predict",
        output_dir=tmp_path / "predict",
    )
    run_on_checkpoint("predict", predict, cfg, PREDICT_KEYS, read_inputs, errors=(InputError,))
    rows = list(csv.DictReader((tmp_path / "predict" / "predictions.csv").open()))
    assert len(rows) == 4
    assert all(row["class"] == CLOTHES[int(row["prediction"])] for row in rows)
