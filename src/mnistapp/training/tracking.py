"""Weights & Biases: Lightning's WandbLogger with what our tests need on top, and a media callback.

``conf/logger/wandb.yaml`` configures the logger (offline unless asked). See ``docs/WANDB.md``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import wandb as lightning_wandb

from mnistapp.runtime import is_multirun
from mnistapp.training.callbacks import MisclassifiedDigits, find_callback

log = logging.getLogger(__name__)


class WandbLogger(lightning_wandb.WandbLogger):
    """Lightning's WandbLogger, plus: a multirun's group and job names, continuing the W&B run of
    a resumed run folder, ``watch`` on request, and a W&B failure mid-run as one warning.
    """

    def __init__(self, watch: str | None = None, **kwargs: Any) -> None:
        if is_multirun():  # test_multirun_jobs_are_separate_runs_in_one_group
            from hydra.core.hydra_config import HydraConfig

            hydra_cfg = HydraConfig.get()
            group = "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])  # e.g. 2024-05-01_12-00-00
            kwargs["group"] = kwargs.get("group") or group
            kwargs["name"] = kwargs.get("name") or hydra_cfg.job.override_dirname
        # test_a_resumed_run_continues_its_wandb_run: W&B keeps <save_dir>/wandb/*run-<date>-<id>
        runs = sorted(
            Path(kwargs.get("save_dir", "."), "wandb").glob("*run-*_*-*"),
            key=lambda p: p.name.split("-")[-2],
        )
        kwargs["id"] = kwargs.get("id") or (runs[-1].name.rsplit("-", 1)[-1] if runs else None)
        super().__init__(**kwargs)
        self.watch_what, self.failed = watch, False  # WandbLogger has no init option for watch

    def _guarded(self, name: str, call: Any, *args: Any) -> None:
        """``call(*args)``, but a W&B failure (starting the run or logging) warns once and stops
        W&B logging, not training (test_a_wandb_failure_mid_run_is_one_warning,
        test_unreachable_server_is_a_warning_not_a_failure)."""
        if self.failed:
            return
        try:
            call(*args)
        except Exception as err:
            if self.failed:  # the run failed to start inside this call, and said so
                return
            self.failed = True
            log.warning(
                "W&B: %s failed (%s: %s); W&B logging is off for the rest of this run, training "
                "and the other loggers go on",
                name,
                type(err).__name__,
                (str(err).splitlines() or [""])[0],
            )

    @property
    def experiment(self) -> Any:
        """The W&B run; when it cannot start (online, server unreachable) one warning and a
        do-nothing stand-in, so training goes on (test_a_run_that_cannot_start_wandb_goes_on)."""
        from lightning.pytorch.loggers.logger import DummyExperiment

        if self.failed:
            return DummyExperiment()
        try:
            return super().experiment
        except Exception as err:
            self._guarded("starting the run", _raise, err)
            return DummyExperiment()

    def log_hyperparams(self, params: Any) -> None:  # noqa: D102
        self._guarded("log_hyperparams", super().log_hyperparams, params)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:  # noqa: D102
        self._guarded("log_metrics", super().log_metrics, metrics, step)


def _raise(err: Exception) -> None:
    raise err


def finish_runs(exit_code: int = 0) -> None:
    """Finish this job's W&B run: Hydra's multirun jobs share one process, and Lightning's
    WandbLogger reuses a run still open (test_multirun_jobs_are_separate_runs_in_one_group)."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].finish(exit_code=exit_code)


class WandbMedia(L.Callback):
    """After testing, log W&B's own charts: an interactive confusion matrix, per-class F1 as a
    table and a bar chart, and the misclassified test images, each captioned with its true and
    predicted class.

    At fit start, ``wandb.watch`` the model if ``logger.wandb.watch`` asks for it.
    Does nothing unless a :class:`WandbLogger` is attached; a failure is only a warning. Class
    names are the Classifier's (from the data config, kept in its checkpoint); the images from
    the trainer's :class:`MisclassifiedDigits` callback, when it has one.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``logger.wandb.watch``: gradients/parameters every ``trainer.log_every_n_steps``."""
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.watch_what:
                logger.watch(pl_module, logger.watch_what, trainer.log_every_n_steps, False)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, lightning_wandb.WandbLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        collector = find_callback(trainer, MisclassifiedDigits)
        failures = collector.failures if collector is not None else {}
        results = pl_module.test_results
        names = getattr(pl_module, "class_names", None) or [
            str(k) for k in range(len(results.get("test/confusion", [])))
        ]
        try:
            media = self.media(results, failures, [str(n) for n in names])
            for logger in loggers:
                logger.log_metrics(media, step=trainer.global_step)
        except Exception as err:
            log.warning("W&B: could not log the test media: %s: %s", type(err).__name__, err)

    @staticmethod
    def media(
        results: dict[str, Any], failures: dict[str, Any], names: Sequence[str]
    ) -> dict[str, Any]:
        """The W&B objects to log, by key, from a test's results and misclassified images."""
        import wandb

        media: dict[str, Any] = {}
        confusion = results.get("test/confusion")
        if confusion:
            # wandb's chart counts (true, predicted) pairs: expand the matrix back into them
            pairs = [(t, p) for t, row in enumerate(confusion) for p, n in enumerate(row)]
            counts = [int(n) for row in confusion for n in row]
            y_true = [t for (t, _), n in zip(pairs, counts, strict=True) for _ in range(n)]
            preds = [p for (_, p), n in zip(pairs, counts, strict=True) for _ in range(n)]
            media["test/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=y_true, preds=preds, class_names=list(names), title="Test confusion matrix"
            )
        f1 = results.get("test/f1_per_class")
        if f1:
            table = wandb.Table(
                columns=["class", "f1"], data=[[n, v] for n, v in zip(names, f1, strict=True)]
            )
            media["test/f1_per_class"] = table
            media["test/f1_per_class_chart"] = wandb.plot.bar(
                table, "class", "f1", title="Test macro F1 per class"
            )
        if failures:
            media["test/misclassified"] = [
                wandb.Image(
                    _to_uint8(image),
                    caption=f"true {names[int(t)]}, predicted {names[int(p)]}",
                )
                for image, t, p in zip(
                    failures["images"], failures["targets"], failures["preds"], strict=True
                )
            ]
        return media


def _to_uint8(image: Any) -> Any:
    """A normalised image as uint8 greyscale, stretched to its own range (for display)."""
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) if high > low else image * 0
    return (scaled * 255).round().byte().numpy()
