"""Faults injected into real ``train.py`` runs, as callbacks (``+callbacks.x._target_=...``).

``KillAt`` kills its own process with SIGKILL, a crash no code can catch or clean up;
``BreakWandb`` makes every later W&B call of the run fail, as a lost connection would.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L


class KillAt(L.Callback):
    """SIGKILL at the start of training epoch ``epoch`` (or before global step ``step``), once.

    It fires only if ``marker`` does not exist, and creates it: the resumed run carries the same
    callback and must live.
    """

    def __init__(self, marker: str, epoch: int | None = None, step: int | None = None) -> None:
        self.marker, self.epoch, self.step = Path(marker), epoch, step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            self._kill()

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            self._kill()

    def _kill(self) -> None:
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


class BreakWandb(L.Callback):
    """From the end of the first training epoch on, the W&B run's ``log`` raises."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def broken(*args: object, **kwargs: object) -> None:
            raise ConnectionError("W&B went away")

        for logger in trainer.loggers:
            if type(logger).__name__.endswith("WandbLogger"):
                logger.experiment.log = broken
