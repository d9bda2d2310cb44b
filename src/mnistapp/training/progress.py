"""Lightning's live bar in a terminal; plain log lines in a file (SLURM, ``nohup``, CI).

Lightning's TQDM and Rich bars redraw with carriage returns even into a file and have no line
mode, so :class:`LogProgress` is ours for that case alone."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

log = logging.getLogger(__name__)


def progress_bar(
    style: str = "tqdm", refresh_rate: int = 20, interval_s: float = 30
) -> ProgressBar:
    """Lightning's ``tqdm`` (stderr) or ``rich`` (stdout) bar on a terminal, else LogProgress."""
    bars = {"tqdm": (TQDMProgressBar, sys.stderr), "rich": (RichProgressBar, sys.stdout)}
    if style not in bars:
        raise ValueError(f"progress bar style must be tqdm or rich (got {style!r})")
    bar, stream = bars[style]
    return bar(refresh_rate) if stream.isatty() else LogProgress(interval_s)


class LogProgress(ProgressBar):
    """A log line every ``interval_s`` seconds of training, one per test, and one per epoch with
    its metrics (at the next epoch's start, or at the end, once the module has logged them)."""

    def __init__(self, interval_s: float = 30) -> None:
        super().__init__()
        self.interval_s, self.is_enabled = interval_s, True
        self._last = self._start = 0.0
        self._finished: tuple[str, float] | None = None  # an epoch not yet reported

    def disable(self) -> None:  # Lightning disables it on ranks other than 0
        self.is_enabled = False

    def enable(self) -> None:
        self.is_enabled = True

    def _say(self, message: str, *args: Any) -> None:
        if self.is_enabled:
            log.info(message, *args)

    def _epoch(self, trainer: L.Trainer) -> str:
        limit = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{limit}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_end(trainer, pl_module)
        self._last = self._start = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now, i = time.monotonic(), args[-1] + 1
        if now - self._last < self.interval_s:
            return
        self._last, total = now, self.total_train_batches  # inf for a loader without a length
        done = f"{i}/{total} ({100 * i / total:.0f}%)" if total < float("inf") else i
        rate = i / max(now - self._start, 1e-9)
        self._say("%s: step %s, %.1f it/s", self._epoch(trainer), done, rate)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finished = (self._epoch(trainer), time.monotonic() - self._start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._finished is None:
            return
        (epoch, elapsed), self._finished = self._finished, None
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        shown = " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
        )
        self._say("%s done in %.1f s: %s", epoch, elapsed, shown)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say("testing")
