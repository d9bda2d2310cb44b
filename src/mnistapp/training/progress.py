"""Progress that suits where it goes: a live bar in a terminal, plain lines in a log file.

A bar redraws itself with carriage returns; written to a file (SLURM's output, ``nohup``, CI)
every redraw becomes text, and the file fills with copies of the bar. :func:`progress_bar` picks
Lightning's bar when the output is a terminal and :class:`LogProgress` otherwise.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

log = logging.getLogger(__name__)


def progress_bar(
    style: str = "tqdm", refresh_rate: int = 20, interval_s: float = 30.0
) -> ProgressBar:
    """Lightning's ``tqdm`` or ``rich`` bar in a terminal; :class:`LogProgress` when the bar's
    stream is not one."""
    if style not in ("tqdm", "rich"):
        raise ValueError(f"progress bar style must be tqdm or rich (got {style!r})")
    # tqdm draws on stderr, Rich on stdout
    stream = sys.stderr if style == "tqdm" else sys.stdout
    if not stream.isatty():
        return LogProgress(interval_s)
    return TQDMProgressBar(refresh_rate) if style == "tqdm" else RichProgressBar(refresh_rate)


class LogProgress(ProgressBar):
    """Progress as log lines: one every ``interval_s`` seconds of training, one per epoch with
    its metrics, one per validation or test pass; no carriage returns, no redraws."""

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._enabled = True
        self._last = self._epoch_start = 0.0
        self._finished: tuple[str, float] | None = None  # an epoch not yet reported

    def disable(self) -> None:
        self._enabled = False  # Lightning disables it on ranks other than 0

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _say(self, message: str, *args: Any) -> None:
        if self._enabled:
            log.info(message, *args)

    def _epoch(self, trainer: L.Trainer) -> str:
        limit = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{limit}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report_epoch(trainer, pl_module)
        self._last = self._epoch_start = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        total = self.total_train_batches  # inf for an iterable without a length
        done = f"{i + 1}/{total} ({100 * (i + 1) / total:.0f}%)" if total < float("inf") else i + 1
        rate = (i + 1) / max(now - self._epoch_start, 1e-9)
        self._say("%s: step %s, %.1f it/s", self._epoch(trainer), done, rate)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # reported once the module has logged the epoch's training metrics (its own
        # on_train_epoch_end runs after the callbacks'): at the next epoch's start, or the end
        self._finished = (self._epoch(trainer), time.monotonic() - self._epoch_start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report_epoch(trainer, pl_module)

    def _report_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._finished is None:
            return
        (epoch, elapsed), self._finished = self._finished, None
        metrics = self.get_metrics(trainer, pl_module)
        shown = " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
            if k != "v_num"
        )
        self._say("%s done in %.1f s: %s", epoch, elapsed, shown)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say("testing")
