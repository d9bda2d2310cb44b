"""A callback that kills its own process with SIGKILL, once: a crash no code can catch or clean up.

Resume tests add it to a real ``train.py`` run: ``+callbacks.killer._target_=tests.killer.KillAt``.
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
