"""The LightningModule: owns the loss, the torchmetrics per stage and the optimiser binding."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

STAGES = ("train", "val", "test")


class Classifier(L.LightningModule):
    """Cross-entropy classification of any ``nn.Module`` that maps images to logits.

    ``optimizer`` and ``scheduler['scheduler']`` are partials (Hydra ``_partial_: true``) bound
    here to the parameters. ``net_config`` (the model's composed config) is saved in the checkpoint
    so evaluation can rebuild the architecture without repeating ``model=...``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        num_classes: int = 10,
        net_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler or {})
        self.criterion = nn.CrossEntropyLoss()
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        # One set of metric objects per stage, so train/val/test states never mix; a NaN loss
        # must show (nan_strategy="disable") rather than be silently dropped from the mean.
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
        self.val_f1_best = MaxMetric()
        self.test_f1_per_class = MulticlassF1Score(num_classes, average=None)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_results: dict[str, Any] = {}
        # misclassified test digits: normalised images [N, H, W], targets and preds (first 64)
        self.test_failures: dict[str, Any] = {}
        self.max_failures = 64

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        preds = logits.argmax(dim=1)
        mean_loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        mean_loss.update(loss.detach(), weight=len(y))
        metrics.update(preds, y)
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss, preds

    def on_train_start(self) -> None:
        # The sanity check must not count towards the best validation F1.
        self.val_f1_best.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        if not torch.isfinite(loss) and not self.trainer.sanity_checking:
            raise FloatingPointError(
                f"val/loss is {loss.item()} at epoch {self.current_epoch}: training diverged "
                "(try a lower optimizer.lr)"
            )
        self.val_f1_best.update(self.val_metrics["f1"].compute())
        self.log("val/f1_best", self.val_f1_best.compute(), prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.test_failures = {"images": [], "targets": [], "preds": []}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        _, preds = self._step(batch, "test")
        self.test_f1_per_class.update(preds, y)
        self.test_confusion.update(preds, y)
        # Keep the first misclassified digits (this rank's) for the failure pictures.
        kept = sum(len(t) for t in self.test_failures["targets"])
        if kept < self.max_failures:
            wrong = (preds != y).nonzero().squeeze(1)[: self.max_failures - kept]
            for key, value in (("images", x[:, 0]), ("targets", y), ("preds", preds)):
                self.test_failures[key].append(value[wrong].detach().cpu())
        return preds

    def on_test_epoch_end(self) -> None:
        self.test_results = {
            "test/f1_per_class": self.test_f1_per_class.compute().tolist(),
            "test/confusion": self.test_confusion.compute().tolist(),
        }
        self.test_f1_per_class.reset()
        self.test_confusion.reset()
        self.test_failures = {k: torch.cat(v) for k, v in self.test_failures.items() if v}

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("Classifier needs an optimizer to train (config group `optimizer`)")
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_config:
            return optimizer
        options = dict(self.scheduler_config)
        factory = options.pop("scheduler")
        kwargs = {}
        # Schedulers that need the run length (OneCycleLR) get it from the trainer.
        func = getattr(factory, "func", factory)
        keywords = getattr(factory, "keywords", {})
        if "total_steps" in inspect.signature(func).parameters and "total_steps" not in keywords:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **options}}
