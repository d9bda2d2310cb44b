"""Pruning for ``hparams_search=optuna``: a job reports each epoch to its trial (``tune.trial``,
set by the sweeper) in the study's storage, which every job process reaches (sqlite)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Report ``monitor`` to Optuna trial ``trial`` each epoch; stop the run if ``pruner`` says so.

    A no-op outside an Optuna sweep (``trial`` or ``storage`` is None).
    """

    def __init__(
        self,
        storage: str | None,
        study_name: str,
        trial: int | None = None,
        monitor: str = "val/f1",
        pruner: Any = None,
    ) -> None:
        self.storage, self.study_name, self.number = storage, study_name, trial
        self.monitor, self.pruner = monitor, pruner
        self.active = trial is not None and storage is not None
        self.pruned_at: int | None = None  # the epoch after which the trial was pruned
        self._trial: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.active or not trainer.is_global_zero:
            return
        import optuna

        storage = optuna.storages.RDBStorage(self.storage)
        # the study does not keep its pruner: each process brings the sweeper's
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self._trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active:
            return
        prune = False
        if self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                logged = ", ".join(sorted(trainer.callback_metrics))
                raise KeyError(
                    f"tune.prune_on={self.monitor!r} is not a logged metric; logged: {logged}"
                )
            self._trial.report(float(value), step=trainer.current_epoch)
            prune = self._trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):  # every DDP rank stops at the same epoch
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True
            log.info(
                "Trial %d pruned after epoch %d (%s)", self.number, self.pruned_at, self.monitor
            )
