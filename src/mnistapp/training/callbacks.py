"""The app's Lightning callbacks: interrupt checkpoints, misclassified digits, figures, hparams."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, OnExceptionCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Callback)


def find_callback(trainer: L.Trainer, kind: type[C]) -> C | None:
    """The trainer's first callback of type ``kind``, or None."""
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


class CheckpointOnInterrupt(OnExceptionCheckpoint):
    """Lightning's ``OnExceptionCheckpoint`` for Ctrl-C and SIGTERM while fitting, kept after it.

    Any other exception saves nothing: a diverged or failed run is not worth going on from."""

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        interrupted = isinstance(exception, KeyboardInterrupt | SIGTERMException)
        if not interrupted or trainer.state.fn != "fit":
            return
        # Ctrl-C inside ModelCheckpoint's save can leave a best file recorded but not written,
        # which last.ckpt would then name: write it (tests/test_checkpoints.py::
        # test_ctrl_c_inside_a_checkpoint_write_still_saves_it); reads, never edits, best_k_models
        for callback in trainer.checkpoint_callbacks:
            for path in getattr(callback, "best_k_models", {}):
                if not Path(path).is_file():
                    trainer.save_checkpoint(path)
        super().on_exception(trainer)
        epoch, step = trainer.current_epoch, trainer.global_step
        log.warning("Interrupted at epoch %d, step %d: saved %s", epoch, step, self.ckpt_path)

    def teardown(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        """Keep the file: Lightning's deletes it at the end of every fit and test."""


class MisclassifiedDigits(Callback):
    """Keep this rank's first ``limit`` misclassified test digits in ``failures`` (CPU tensors
    ``images`` ``[N, H, W]`` normalised, ``targets``, ``preds``; empty when all were right)."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self.failures: dict[str, torch.Tensor] = {}
        self._parts: dict[str, list[torch.Tensor]] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.failures, self._parts = {}, {"images": [], "targets": [], "preds": []}

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, preds: Any, batch: Any, *_: Any
    ) -> None:
        kept = sum(len(t) for t in self._parts["targets"])
        x, y = batch  # preds: what Classifier.test_step returns
        wrong = (preds != y).nonzero().squeeze(1)[: max(self.limit - kept, 0)]
        for key, value in (("images", x[:, 0]), ("targets", y), ("preds", preds)):
            self._parts[key].append(value[wrong].detach().cpu())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.failures = {k: torch.cat(v) for k, v in self._parts.items() if v}


class TensorBoardHparams(Callback):
    """After testing, the run's config against ``metrics`` in TensorBoard's hparams view, in
    ``<tensorboard>/hparams`` so that the run's own scalars are not repeated there."""

    def __init__(self, metrics: tuple[str, ...] = ("val/f1_best", "test/acc")) -> None:
        self.metrics, self.fit_metrics = metrics, {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_metrics = dict(trainer.callback_metrics)  # testing replaces them

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        known = {**self.fit_metrics, **trainer.callback_metrics}
        found = {k: float(known[k]) for k in self.metrics if k in known}
        for logger in trainer.loggers if trainer.is_global_zero else []:
            if isinstance(logger, TensorBoardLogger):
                params = _flat(logger.hparams.get("config", logger.hparams))
                logger.experiment.add_hparams(params, found, run_name="hparams")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"model/width": 64, ...}``; values other than numbers as text."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree if isinstance(tree, int | float | str) else str(tree)}
    return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}/").items()}


class FigureWriter(Callback):
    """The figures of docs/EVALUATION.md into ``output_dir`` on rank 0 (a failure is a warning):
    curves and kernels after fitting (or testing alone: ``eval.py``); confusion, failures and,
    with ``tsne``, t-SNE after testing. ``history_csv`` defaults to the CSVLogger's file."""

    def __init__(
        self,
        output_dir: str | Path,
        enabled: bool = True,
        tsne: bool = False,
        tsne_samples: int = 1500,
        history_csv: str | Path | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.enabled, self.tsne, self.tsne_samples = enabled, tsne, tsne_samples
        self.history_csv = Path(history_csv) if history_csv else None
        self.fitted = False

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and trainer.is_global_zero:
            self._write("curves", lambda: self._curves(trainer))
            self._write("kernels", lambda: self._kernels(pl_module))
        self.fitted = True

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        from mnistapp.reporting import plots

        if not self.fitted:
            self.on_fit_end(trainer, pl_module)
        names, results = pl_module.class_names, pl_module.test_results
        if "test/confusion" in results:
            confusion = results["test/confusion"]
            self._write("confusion", lambda: plots.confusion_figure(confusion, class_names=names))
        collector = find_callback(trainer, MisclassifiedDigits)
        if collector is not None:  # failures is {} when every digit was right: the figure says so
            wrong = [collector.failures.get(k, []) for k in ("images", "targets", "preds")]
            self._write("failures", lambda: plots.failures_figure(*wrong, class_names=names))
        if self.tsne:
            self._write("tsne", lambda: self._tsne(trainer, pl_module, names))

    def _write(self, name: str, make: Callable[[], Any]) -> None:
        from mnistapp.reporting.plots import save_figure

        try:
            fig = make()
            if fig is not None:
                log.info("Wrote %s", save_figure(fig, self.output_dir / f"{name}.png"))
        except Exception:
            log.warning("Could not write %s.png", name, exc_info=True)

    def _curves(self, trainer: L.Trainer) -> Any:
        from mnistapp.reporting.plots import curves_figure, read_history

        path = self.history_csv
        csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if path is None and csv_logger is not None:
            csv_logger.save()  # flush: Lightning finalises loggers only after on_fit_end
            path = Path(csv_logger.experiment.metrics_file_path)
        if path is None or not path.is_file():
            log.info("No CSV metrics to plot training curves from; skipping curves.png")
            return None
        return curves_figure(read_history(path))

    def _kernels(self, pl_module: L.LightningModule) -> Any:
        from mnistapp.reporting.plots import kernels_figure

        conv = getattr(getattr(pl_module, "net", None), "first_conv", None)
        if conv is None:
            return None  # a conv-free model (MLP) has no kernels to show
        return kernels_figure(conv.weight.detach().float().cpu().numpy())

    def _tsne(self, trainer: L.Trainer, pl_module: L.LightningModule, names: list[str]) -> Any:
        # penultimate features of tsne_samples test digits, freshly initialised and trained
        from mnistapp.reporting.plots import tsne_embedding, tsne_figure

        net, datamodule = getattr(pl_module, "net", None), trainer.datamodule
        if net is None or not hasattr(net, "features") or not hasattr(datamodule, "normalize"):
            log.info("t-SNE needs a zoo model and the MNIST DataModule; skipping tsne.png")
            return None
        images, labels = (t[: self.tsne_samples] for t in datamodule.data["test"])
        x, y = datamodule.normalize(images).to(pl_module.device), labels.cpu().numpy()
        fresh = copy.deepcopy(net)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        panels = {"freshly initialised": fresh, "trained": net}
        embeddings = {title: (tsne_embedding(_features(m, x)), y) for title, m in panels.items()}
        return tsne_figure(embeddings, class_names=names)


@torch.inference_mode()
def _features(net: nn.Module, x: torch.Tensor, batch_size: int = 500) -> Any:
    was_training = net.training
    net.eval()
    features = torch.cat([net.features(chunk).float().cpu() for chunk in x.split(batch_size)])
    net.train(was_training)
    return features.numpy()
