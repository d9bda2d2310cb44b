"""Weights & Biases: Lightning's WandbLogger (``conf/logger/wandb.yaml``, offline unless asked)
with a multirun's names, a resumed run's id and failures as one warning; a media callback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import wandb as lightning_wandb
from lightning.pytorch.loggers.logger import DummyExperiment

from mnistapp.runtime import is_multirun
from mnistapp.training.callbacks import MisclassifiedDigits, find_callback

log = logging.getLogger(__name__)


class WandbLogger(lightning_wandb.WandbLogger):
    """Lightning's WandbLogger; ``watch`` is what ``wandb.watch`` logs (see :class:`WandbMedia`)."""

    def __init__(self, watch: str | None = None, **kwargs: Any) -> None:
        if is_multirun():  # test_multirun_jobs_are_separate_runs_in_one_group
            from hydra.core.hydra_config import HydraConfig

            hydra_cfg = HydraConfig.get()
            group = "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])  # e.g. 2024-05-01_12-00-00
            kwargs["group"] = kwargs.get("group") or group
            kwargs["name"] = kwargs.get("name") or hydra_cfg.job.override_dirname
        # a resumed run folder goes on with its W&B run: wandb/*run-<date>-<id> (newest last)
        runs = sorted(
            Path(kwargs.get("save_dir", "."), "wandb").glob("*run-*_*-*"),
            key=lambda p: p.name.split("-")[-2],
        )
        kwargs["id"] = kwargs.get("id") or (runs[-1].name.rsplit("-", 1)[-1] if runs else None)
        super().__init__(**kwargs)
        self.watch_what, self.failed = watch, False

    # W&B cannot start (server unreachable) or fails mid-run: Lightning would end the run, so
    # warn once and log no more to W&B (tests/test_wandb.py: test_a_*_wandb_*)
    def _fail(self, what: str, err: Exception) -> None:
        if not self.failed:
            self.failed = True
            reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            log.warning("W&B: %s failed (%s); W&B logging is off for the rest of this run, "
                        "training and the other loggers go on", what, reason)  # fmt: skip

    @property
    def experiment(self) -> Any:
        """The W&B run, or a do-nothing stand-in once W&B has failed."""
        if not self.failed:
            try:
                return super().experiment
            except Exception as err:
                self._fail("starting the run", err)
        return DummyExperiment()

    def log_hyperparams(self, params: Any) -> None:  # noqa: D102
        try:
            super().log_hyperparams(params)
        except Exception as err:
            self._fail("log_hyperparams", err)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:  # noqa: D102
        try:
            super().log_metrics(metrics, step)
        except Exception as err:
            self._fail("log_metrics", err)


def finish_runs(exit_code: int = 0) -> None:
    """Finish this job's W&B run: Lightning's WandbLogger would reuse one still open, and Hydra's
    multirun jobs share one process."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].finish(exit_code=exit_code)


class WandbMedia(L.Callback):
    """``wandb.watch`` at fit start if asked; after testing, W&B's confusion matrix, per-class F1
    and captioned misclassified digits. A no-op without a WandbLogger; a failure is a warning."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.watch_what:
                logger.watch(pl_module, logger.watch_what, trainer.log_every_n_steps, False)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, lightning_wandb.WandbLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        collector = find_callback(trainer, MisclassifiedDigits)
        failures = collector.failures if collector is not None else {}
        try:
            media = self.media(pl_module.test_results, failures, pl_module.class_names)
            for logger in loggers:
                logger.log_metrics(media, step=trainer.global_step)
        except Exception as err:
            log.warning("W&B: could not log the test media: %s: %s", type(err).__name__, err)

    @staticmethod
    def media(results: dict[str, Any], failures: dict[str, Any], names: Sequence[str]) -> dict:
        """The W&B objects to log, by key, from a test's results and misclassified digits."""
        import wandb

        media: dict[str, Any] = {}
        if confusion := results.get("test/confusion"):
            # wandb's chart counts (true, predicted) pairs: expand the matrix back into them
            cells = [(t, p, n) for t, row in enumerate(confusion) for p, n in enumerate(row)]
            y_true = [t for t, _, n in cells for _ in range(n)]
            preds = [p for _, p, n in cells for _ in range(n)]
            media["test/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=y_true, preds=preds, class_names=list(names), title="Test confusion matrix"
            )
        if f1 := results.get("test/f1_per_class"):
            rows = [list(row) for row in zip(names, f1, strict=True)]
            table = wandb.Table(columns=["class", "f1"], data=rows)
            media["test/f1_per_class"] = table
            title = "Test macro F1 per class"
            media["test/f1_per_class_chart"] = wandb.plot.bar(table, "class", "f1", title=title)
        if failures:
            wrong = zip(failures["images"], failures["targets"], failures["preds"], strict=True)
            media["test/misclassified"] = [
                wandb.Image(_to_uint8(im), caption=f"true {names[t]}, predicted {names[p]}")
                for im, t, p in wrong
            ]
        return media


def _to_uint8(image: Any) -> Any:
    """A normalised image as uint8 greyscale, stretched to its own range (for display)."""
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) if high > low else image * 0
    return (scaled * 255).round().byte().numpy()
