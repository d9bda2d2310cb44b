"""Pruning for ``hparams_search=optuna``: a job reports its epochs to the trial it is
(``tune.trial``, set by ``hydra_plugins.mnistapp_optuna``), and stops when the study's pruner
says so; the run records ``pruned``. Jobs are separate processes, so this needs a storage they
all reach: the preset's sqlite file.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Report ``monitor`` to Optuna trial ``trial`` each epoch; stop the run if ``pruner`` says so.

    Inactive (a no-op) outside an Optuna sweep: ``trial`` or ``storage`` is ``None``.
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
        self.pruned_at: int | None = None  # the epoch after which the trial was pruned
        self._trial: Any = None

    @property
    def active(self) -> bool:
        return self.number is not None and self.storage is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.active or not trainer.is_global_zero:
            return
        import optuna

        storage = optuna.storages.RDBStorage(self.storage)
        # the pruner is not saved with the study: each process brings its own (the sweeper's)
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
                raise KeyError(
                    f"tune.prune_on={self.monitor!r} is not a logged metric; logged: "
                    f"{', '.join(sorted(trainer.callback_metrics))}"
                )
            self._trial.report(float(value), step=trainer.current_epoch)
            prune = self._trial.should_prune()
        # every DDP rank must stop at the same epoch
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True
            log.info(
                "Trial %d pruned after epoch %d (%s)", self.number, self.pruned_at, self.monitor
            )
