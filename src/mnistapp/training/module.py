"""The LightningModule: owns the loss, the torchmetrics per stage and the optimiser binding."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
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

from mnistapp.errors import ConfigError, DivergedError

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


class Classifier(L.LightningModule):
    """Cross-entropy classification of any ``nn.Module`` that maps images to logits.

    ``optimizer`` and ``scheduler['scheduler']`` are partials (Hydra ``_partial_: true``) bound
    here to the parameters. ``net_config``, ``model_name`` (e.g. ``lenet``) and ``class_names``
    are saved in the checkpoint, so evaluation rebuilds and names the architecture and classes
    alone. ``test_step`` returns the predictions (for ``MisclassifiedDigits``).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        num_classes: int = 10,
        net_config: dict[str, Any] | None = None,
        model_name: str | None = None,
        max_loss: float = 1000.0,
        class_names: Sequence[str] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        # plain strings: a config list (ListConfig) would not load from a weights_only checkpoint
        class_names = None if class_names is None else [str(name) for name in class_names]
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        # NHWC lets oneDNN (CPU) and cuDNN (tensor cores) pick their fast convolution kernels;
        # a module's .to(device) and a checkpoint's load keep the layout
        self.channels_last = channels_last
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        if compile:  # compiles forward in place: the state_dict keys (and checkpoints) stay
            self.net.compile()
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler or {})
        self.criterion = nn.CrossEntropyLoss()
        # Our own argmax predictions and labels: argument validation would only add device syncs
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
                "f1": MulticlassF1Score(num_classes, average="macro", validate_args=False),
            }
        )
        # One set per stage, so train/val/test states never mix; a NaN loss must show
        # (nan_strategy="disable") rather than be silently dropped from the mean.
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
        self.val_f1_best = MaxMetric()
        self.val_f1_best.persistent(True)  # in the checkpoint: a resumed run keeps its best
        self.test_f1_per_class = MulticlassF1Score(num_classes, average=None, validate_args=False)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self.test_results: dict[str, Any] = {}  # the last test's per-class F1 and confusion
        # this epoch's (loss, preds, targets) per stage, not yet given to the metrics
        self._pending: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {s: [] for s in STAGES}
        self._window: list[Tensor] = []  # training losses since the last logged step point
        self._logged_step = -1
        self.max_loss = max_loss
        self.start_epoch = 0

    @property
    def class_names(self) -> list[str]:
        """The name of each class: saved with the model, else the DataModule's, else ``0..n-1``."""
        names = self.hparams.get("class_names")
        if not names and self._trainer is not None:
            names = getattr(self._trainer.datamodule, "class_names", None)
        return list(names) if names else [str(k) for k in range(self.hparams.num_classes)]

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        preds = logits.argmax(dim=1)
        self._pending[stage].append((loss.detach(), preds, y))
        return loss, preds

    def _log_epoch(self, stage: str) -> dict[str, Tensor]:
        """Update, compute, log and reset a stage's figures (synced across DDP ranks).

        One torchmetrics update per epoch with every batch: an update costs about 0.1 ms of
        Python whatever its size, and handing a Metric to ``self.log`` about 1 ms a call.
        """
        pending, self._pending[stage] = self._pending[stage], []
        loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        if pending:
            losses, preds, targets = zip(*pending, strict=True)
            sizes = torch.tensor([len(t) for t in targets], device=losses[0].device)
            loss.update(torch.stack(losses), weight=sizes)
            metrics.update(torch.cat(preds), torch.cat(targets))
            if stage == "test":
                self.test_f1_per_class.update(torch.cat(preds), torch.cat(targets))
                self.test_confusion.update(torch.cat(preds), torch.cat(targets))
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        loss.reset()
        metrics.reset()
        self.log_dict(values, prog_bar=True)
        return values

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")[0]
        self._window.append(loss.detach())
        return loss

    def on_fit_start(self) -> None:
        # torch.compile fails only at the first forward, inside a long traceback (no C++
        # compiler, no Triton): try it on one op first, so that is one line
        if self.hparams.compile:
            try:
                torch.compile(torch.neg)(torch.zeros(1, device=self.device))
            except Exception as err:
                reason = str(err).strip().splitlines()[0]
                raise ConfigError(
                    f"compile=true: torch.compile cannot run here: {reason}"
                ) from None

    def on_train_start(self) -> None:
        self.start_epoch = self.current_epoch  # after a resume, the epoch it went on from

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning hands step values to the loggers after the optimiser step that makes
        # global_step a multiple of log_every_n_steps; the mean of the window since the last
        # point goes with them: one host sync per point, none in the steps between
        every = self.trainer.log_every_n_steps
        if every and self.global_step % every == 0 and self.global_step != self._logged_step:
            self._check_divergence()
            self.log("train/loss", torch.stack(self._window).mean(), on_step=True, on_epoch=False)
            self._window, self._logged_step = [], self.global_step

    def _check_divergence(self) -> None:
        """Stop on a non-finite loss, or one above ``max_loss``, in the window (one host sync)."""
        if not self._window:
            return
        losses = torch.stack(self._window)
        bad = ~torch.isfinite(losses) | (losses > self.max_loss)
        if bad.any():
            first = int(bad.nonzero()[0])
            step = self.global_step - (len(losses) - 1 - first)
            raise DivergedError(
                f"training diverged at epoch {self.current_epoch}, step {step}: loss "
                f"{losses[first].item():.4g} (non-finite or above max_loss={self.max_loss:g}); "
                "try a lower optimizer.lr"
            )

    def on_train_epoch_end(self) -> None:
        self._check_divergence()
        self._log_epoch("train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        if self.trainer.sanity_checking:
            return
        if not torch.isfinite(values["val/loss"]):
            raise DivergedError(
                f"training diverged at epoch {self.current_epoch}: val/loss is "
                f"{values['val/loss'].item()}; try a lower optimizer.lr"
            )
        self.val_f1_best.update(values["val/f1"])
        self.log("val/f1_best", self.val_f1_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")[1]

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        names, f1 = self.class_names, self.test_f1_per_class.compute().tolist()
        by_class = dict(zip(names, f1, strict=True))
        self.test_results = {
            "class_names": names,
            "test/f1_per_class": f1,  # by label index; test/f1_by_class names them
            "test/f1_by_class": by_class,
            "test/confusion": self.test_confusion.compute().tolist(),
        }
        if self.trainer.is_global_zero:
            shown = ", ".join(f"{name} {value:.4f}" for name, value in by_class.items())
            log.info("Test F1 per class: %s", shown)
        self.test_f1_per_class.reset()
        self.test_confusion.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning restores model, optimizer, scheduler and loops; the random streams (dropout,
        # augmentation) are ours to keep, so a resumed run draws what it would have drawn.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states") or {}
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("Classifier needs an optimizer to train (config group `optimizer`)")
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_config:
            return optimizer
        options = dict(self.scheduler_config)
        factory = options.pop("scheduler")
        # Schedulers that need the run length (OneCycleLR) get it from the trainer.
        func, keywords = getattr(factory, "func", factory), getattr(factory, "keywords", {})
        kwargs = {}
        if "total_steps" in inspect.signature(func).parameters and "total_steps" not in keywords:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **options}}
