"""The LightningModule: metric names per stage, best-F1 tracking, optimiser/scheduler binding."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from mnistapp.data.datamodule import MNISTDataModule
from mnistapp.models import LeNet5
from mnistapp.training.callbacks import MisclassifiedDigits, find_callback
from mnistapp.training.module import Classifier


def _fit(
    tiny_data: Path,
    tmp_path: Path,
    scheduler: dict | None = None,
    epochs: int = 3,
    net: nn.Module | None = None,
    channels_last: bool = False,
):
    L.seed_everything(0)
    dm = MNISTDataModule(str(tiny_data), batch_size=32, val_size=100, download=False, verify=False)
    net = net or nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    module = Classifier(
        net,
        optimizer=partial(torch.optim.Adam, lr=0.01),
        scheduler=scheduler,
        channels_last=channels_last,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[MisclassifiedDigits()],
    )
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm


def test_metrics_are_logged_per_stage(tiny_data: Path, tmp_path: Path) -> None:
    trainer, module, dm = _fit(tiny_data, tmp_path)
    fit_metrics = set(trainer.callback_metrics)
    for stage in ("train", "val"):
        assert {f"{stage}/loss", f"{stage}/acc", f"{stage}/f1"} <= fit_metrics
    assert "val/f1_best" in fit_metrics
    assert trainer.callback_metrics["val/f1_best"] >= trainer.callback_metrics["val/f1"]
    assert (
        trainer.callback_metrics["val/acc"] > 0.5
    )  # the synthetic digits are easy: well above 0.1

    trainer.test(module, datamodule=dm, verbose=False)
    assert {"test/loss", "test/acc", "test/f1"} <= set(trainer.callback_metrics)
    per_class = module.test_results["test/f1_per_class"]
    confusion = torch.tensor(module.test_results["test/confusion"])
    assert len(per_class) == 10 and confusion.shape == (10, 10)
    assert confusion.sum() == 200  # every test image counted once
    accuracy = confusion.trace() / confusion.sum()
    assert accuracy == pytest.approx(trainer.callback_metrics["test/acc"].item(), abs=1e-6)
    failures = find_callback(trainer, MisclassifiedDigits).failures
    n_wrong = int(confusion.sum() - confusion.trace())
    assert len(failures["targets"]) == len(failures["preds"]) == min(n_wrong, 64)
    assert failures["images"].shape[1:] == (28, 28)
    assert (failures["targets"] != failures["preds"]).all()


def test_channels_last_trains_to_the_same_weights(tiny_data: Path, tmp_path: Path) -> None:
    """NHWC is only a memory layout: the same network gives the same outputs and gradients, and
    the layout holds through training (a silent fallback to NCHW would lose the speed-up).

    Compared on one step: over an epoch Adam magnifies the reordered sums of near-zero gradients
    into differences of 1e-2, which would hide a real difference as well."""
    torch.manual_seed(0)
    plain = LeNet5(activation="relu", pool="max")
    module = Classifier(copy.deepcopy(plain), optimizer=partial(torch.optim.SGD, lr=0.1),
                        channels_last=True)  # fmt: skip
    x = torch.randn(8, 1, 28, 28)
    logits, nhwc_logits = plain(x), module(x)
    assert torch.allclose(logits, nhwc_logits, atol=1e-5)
    logits.square().sum().backward()
    nhwc_logits.square().sum().backward()
    for (name, weight), nhwc in zip(plain.named_parameters(), module.net.parameters(), strict=True):
        assert torch.allclose(weight.grad, nhwc.grad, rtol=1e-4, atol=1e-5), name
    torch.manual_seed(0)
    net = LeNet5(activation="relu", pool="max")
    _, fitted, _ = _fit(tiny_data, tmp_path, epochs=1, net=net, channels_last=True)
    # C3, not C1: with one input channel both layouts are the same strides
    conv = [m for m in fitted.net.modules() if isinstance(m, nn.Conv2d)][1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()


def test_onecycle_gets_total_steps_from_trainer(tiny_data: Path, tmp_path: Path) -> None:
    scheduler = {
        "scheduler": partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.05),
        "interval": "step",
    }
    trainer, _, _ = _fit(tiny_data, tmp_path, scheduler=scheduler, epochs=2)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == trainer.estimated_stepping_batches == 2 * 16


def test_missing_optimizer_is_a_clear_error() -> None:
    module = Classifier(nn.Linear(2, 10))
    with pytest.raises(ValueError, match="optimizer"):
        module.configure_optimizers()


def test_divergence_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tiny_data), batch_size=32, val_size=100, download=False, verify=False)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    module = Classifier(net, optimizer=partial(torch.optim.SGD, lr=float("nan")))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(FloatingPointError, match="diverged"):
        trainer.fit(module, datamodule=dm)


def test_class_names_are_kept_and_checked(tiny_data: Path, tmp_path: Path) -> None:
    assert Classifier(nn.Linear(2, 3), num_classes=3).class_names == ["0", "1", "2"]
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        Classifier(nn.Linear(2, 3), num_classes=3, class_names=["a", "b"])
    # without names of its own, the module takes the DataModule's; results are keyed by them
    trainer, module, dm = _fit(tiny_data, tmp_path, epochs=1)
    dm.hparams.class_names = [f"class {k}" for k in range(10)]
    trainer.test(module, datamodule=dm, verbose=False)
    results = module.test_results
    assert results["class_names"] == dm.class_names == module.class_names
    assert list(results["test/f1_by_class"]) == dm.class_names
    assert list(results["test/f1_by_class"].values()) == results["test/f1_per_class"]
