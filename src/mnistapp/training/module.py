"""The LightningModule: the loss, the torchmetrics of each stage and the optimiser."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Accuracy, ConfusionMatrix, F1Score, MaxMetric, MeanMetric, MetricCollection

from mnistapp.errors import ConfigError, DivergedError

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


class Classifier(L.LightningModule):
    """Cross-entropy classification by any ``nn.Module`` that maps images to logits.

    ``optimizer`` and ``scheduler['scheduler']`` are Hydra partials bound here to the parameters;
    ``net_config``, ``model_name`` and ``class_names`` go into the checkpoint for evaluation."""

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
        # NHWC lets oneDNN (CPU) and cuDNN (tensor cores) pick their fast convolution kernels
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        if compile:  # in place: the state_dict keys (and checkpoints) stay those of the net
            self.net.compile()
        self.optimizer_factory, self.scheduler_config = optimizer, dict(scheduler or {})
        self.criterion = nn.CrossEntropyLoss()
        # validate_args=False: the inputs are our own argmax, and checking them costs device syncs
        args = {"task": "multiclass", "num_classes": num_classes, "validate_args": False}
        acc, f1 = Accuracy(**args, average="micro"), F1Score(**args, average="macro")
        metrics = MetricCollection({"acc": acc, "f1": f1})
        for stage in STAGES:  # a NaN loss must show, not drop out of the mean
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
        self.val_f1_best = MaxMetric()
        self.val_f1_best.persistent(True)  # a resumed run keeps its best
        self.test_f1_per_class = F1Score(**args, average=None)
        self.test_confusion = ConfusionMatrix(**args)
        self.test_results: dict[str, Any] = {}  # the last test's per-class F1 and confusion
        # (loss, preds, targets) of this epoch's batches, given to the metrics at its end
        self._pending: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {s: [] for s in STAGES}
        self._window: list[Tensor] = []  # training losses since the last logged step
        self._logged_step = -1
        self.start_epoch = 0

    @property
    def class_names(self) -> list[str]:
        """The class names: saved with the model, else the DataModule's, else ``0..n-1``."""
        names = self.hparams.get("class_names")
        if not names and self._trainer is not None:
            names = getattr(self._trainer.datamodule, "class_names", None)
        return list(names) if names else [str(k) for k in range(self.hparams.num_classes)]

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss, preds = self.criterion(logits, y), logits.argmax(dim=1)
        self._pending[stage].append((loss.detach(), preds, y))
        return loss, preds

    def _log_epoch(self, stage: str) -> dict[str, Tensor]:
        # One metric update per epoch: each costs ~0.1 ms of Python whatever its size, and
        # handing a Metric to self.log ~1 ms a call
        pending, self._pending[stage] = self._pending[stage], []
        loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        if pending:
            losses, preds, targets = zip(*pending, strict=True)
            sizes = torch.tensor([len(t) for t in targets], device=losses[0].device)
            loss.update(torch.stack(losses), weight=sizes)
            preds, targets = torch.cat(preds), torch.cat(targets)
            metrics.update(preds, targets)
            if stage == "test":
                self.test_f1_per_class.update(preds, targets)
                self.test_confusion.update(preds, targets)
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        loss.reset()
        metrics.reset()
        self.log_dict(values, prog_bar=True)
        return values

    def on_fit_start(self) -> None:
        # torch.compile fails only at the first forward, in a long traceback (no C++ compiler,
        # no Triton): trying it on one op first makes that one line
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

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")[0]
        self._window.append(loss.detach())
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning hands step values to the loggers every log_every_n_steps; the window's mean
        # goes with them: one host sync per logged step, none in between
        every = self.trainer.log_every_n_steps
        if every and self.global_step % every == 0 and self.global_step != self._logged_step:
            self._check_divergence()
            self.log("train/loss", torch.stack(self._window).mean(), on_step=True, on_epoch=False)
            self._window, self._logged_step = [], self.global_step

    def _check_divergence(self) -> None:
        if not self._window:
            return
        losses, max_loss = torch.stack(self._window), self.hparams.max_loss
        bad = ~torch.isfinite(losses) | (losses > max_loss)
        if bad.any():
            first = int(bad.nonzero()[0])
            step = self.global_step - (len(losses) - 1 - first)
            raise DivergedError(
                f"training diverged at epoch {self.current_epoch}, step {step}: loss "
                f"{losses[first].item():.4g} (non-finite or above max_loss={max_loss:g}); "
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
        return self._step(batch, "test")[1]  # the predictions, for MisclassifiedDigits

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
        # Lightning does not keep the random streams (dropout, augmentation): a resumed run
        # draws what it would have drawn
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
        # a scheduler that needs the run's length (OneCycleLR) gets it from the trainer
        needs_length = "total_steps" in inspect.signature(factory).parameters
        if needs_length and "total_steps" not in getattr(factory, "keywords", {}):
            factory = partial(factory, total_steps=int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": factory(optimizer), **options},
        }
