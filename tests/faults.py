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
    """SIGKILL at the start of training epoch ``epoch``, unless ``marker`` exists (then create it).

    The marker makes it fire once: the resumed run carries the same callback and must live.
    """

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch, self.marker = epoch, Path(marker)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not self.marker.exists():
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
