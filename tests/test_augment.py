"""``data.augment``: per-sample random affine moves of training batches, on the device."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mnistapp.data.datamodule import MNISTDataModule
from mnistapp.data.transforms import RandomAffine, affine, normalize
from mnistapp.training.checkpoints import load_checkpoint
from mnistapp.training.module import Classifier
from tests.helpers import train_tiny

AUGMENT = {"degrees": 10, "translate": [0.1, 0.1], "scale": [0.9, 1.1]}


def _images(n: int, height: int = 28, width: int = 28) -> torch.Tensor:
    """uint8 images with an off-centre bright block, so that any move shows."""
    images = torch.randint(0, 40, (n, height, width), generator=torch.Generator().manual_seed(0))
    images[:, 4:12, 6:10] = 255
    return images.to(torch.uint8)


@pytest.mark.parametrize("size", [(28, 28), (20, 32)])
def test_affine_is_torchvisions_geometry_for_each_image(size: tuple[int, int]) -> None:
    images = _images(3, *size)
    angles = torch.tensor([30.0, -12.0, 0.0])
    shifts = torch.tensor([[3.0, -2.0], [0.0, 4.0], [-5.5, 1.5]])
    scales = torch.tensor([1.0, 1.2, 0.8])
    moved = affine(images, angles, shifts, scales)
    assert moved.dtype == torch.uint8 and moved.shape == images.shape
    for i in range(3):
        expected = TF.affine(
            images[i : i + 1].float(),
            angle=float(angles[i]),
            translate=shifts[i].tolist(),
            scale=float(scales[i]),
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
        )[0]
        # the same up to rounding
        assert (moved[i].float() - expected.round().clamp(0, 255)).abs().max() <= 1


def test_each_image_gets_its_own_move() -> None:
    torch.manual_seed(0)
    same = _images(1).expand(16, 28, 28).contiguous()
    moved = RandomAffine.from_config(AUGMENT)(same)
    assert moved.dtype == torch.uint8 and moved.shape == same.shape
    assert not torch.equal(moved, same)
    # every pair of images differs: the parameters are drawn per sample, not per batch
    flat = moved.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(16) for j in range(i + 1, 16))
    assert int(moved.max()) > 200  # the bright block is moved, not washed out
    # no parameters, no change
    assert torch.equal(RandomAffine.from_config({})(same), same)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"shear": 5}, r"data.augment.shear is not a setting; data.augment takes degrees, "),
        ({"degrees": -5}, r"data.augment.degrees must be a number >= 0 or a pair"),
        ({"degrees": [10, -10]}, r"data.augment.degrees must be"),
        ({"degrees": "10"}, r"data.augment.degrees must be"),
        ({"translate": [0.1, 1.5]}, r"data.augment.translate must be two fractions in \[0, 1\]"),
        ({"translate": 0.1}, r"data.augment.translate must be two fractions"),
        ({"scale": [1.1, 0.9]}, r"data.augment.scale must be a pair 0 < min <= max"),
        ({"scale": [0, 1]}, r"data.augment.scale must be a pair"),
        ({"scale": [True, 1]}, r"data.augment.scale must be a pair"),
        ([10], r"data.augment must be null or a mapping"),
    ],
)
def test_bad_settings_name_their_key(config: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(augment=config)


def test_only_training_batches_are_augmented(tiny_data: Path) -> None:
    dm = MNISTDataModule(
        str(tiny_data), batch_size=32, val_size=100, download=False, verify=False, augment=AUGMENT
    )
    dm.setup("fit")
    saved = {"degrees": [-10.0, 10.0], "translate": [0.1, 0.1], "scale": [0.9, 1.1]}
    assert dm.hparams.augment == saved  # plain values, for weights_only checkpoints
    images, labels = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=True)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(y, labels) and x.shape == (32, 1, 28, 28)
    assert not torch.allclose(x, normalize(images))
    dm.trainer = SimpleNamespace(training=False)  # validating, testing
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(x, normalize(images)) and torch.equal(y, labels)


def test_fit_augments_training_steps_only(tiny_data: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = MNISTDataModule(
        str(tiny_data), batch_size=32, val_size=100, download=False, verify=False, augment=AUGMENT
    )
    calls: list[int] = []
    real = dm.augment

    def spy(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return real(images)

    dm.augment = spy
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    module = Classifier(net, optimizer=partial(torch.optim.SGD, lr=0.05))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)  # sanity check and validation batches too
    assert calls == [32, 32, 32]
    trainer.test(module, datamodule=dm, verbose=False)
    assert calls == [32, 32, 32]


def test_a_training_run_with_augment(tiny_data: Path, tmp_path: Path) -> None:
    run_dir = train_tiny(
        tiny_data,
        tmp_path,
        "data.augment={degrees:10,translate:[0.1,0.1],scale:[0.9,1.1]}",
        "trainer.max_epochs=1",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test/acc"] > 0.2
    # the setting is kept in the checkpoint as plain values (weights_only loads it)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["datamodule_hyper_parameters"]["augment"]["translate"] == [0.1, 0.1]
