"""``hydra/sweeper=optuna``: a Hydra sweeper on Optuna >= 4, with saved studies and pruning.

Why our own sweeper and not ``hydra-optuna-sweeper``: its 1.3 release pins Optuna < 3 (whose
sqlite storage fails under SQLAlchemy 2), the 1.4 line is a release candidate, and neither can
prune: a Hydra sweeper only sees a job's return value. Here each trial is an ordinary multirun
job, launched by whichever launcher is configured (basic, joblib for parallel trials, submitit
for SLURM), so sweep summaries, W&B grouping and failure handling are unchanged. The job learns
its trial number from the ``tune.trial`` override; :class:`mnistapp.training.tuning.OptunaPruning`
reports its validation metric to the saved study each epoch and stops it when the pruner says so.

Hydra finds sweepers only in the ``hydra_plugins`` namespace package, hence this module's home.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnistapp.cli.validation import ConfigError

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"  # read by mnistapp.reporting.sweeps
TRIAL_KEY = "tune.trial"
SQLITE = "sqlite:///"


def distribution(override: Override) -> Any:
    """The Optuna distribution for a sweep override: ``choice(...)``, ``range(...)``,
    ``interval(a, b)`` (``tag(log, interval(a, b))`` for a log scale)."""
    import optuna.distributions as d

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution(list(override.sweep_iterator(transformer=lambda x: x)))
    if isinstance(value, RangeSweep):
        return d.CategoricalDistribution(list(override.sweep_iterator(transformer=lambda x: x)))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return d.IntDistribution(value.start, value.end, log=log_scale)
        return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(f"{override.input_line}: not a sweep (use choice, range or interval)")


def search_space(
    params: Mapping[str, str], arguments: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """Split the configured ``params`` and the command line into a search space and fixed
    overrides; a sweep on the command line replaces the configured one for its key."""
    parser = OverridesParser.create()
    configured = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    given = parser.parse_overrides(list(arguments))
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in [*configured, *given]:
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            space.pop(key, None)  # a fixed value on the command line wins over the preset
            fixed.append(override.input_line)
    return space, fixed


def job_outcome(output_dir: str | Path, metric: str) -> tuple[str, float | None]:
    """A finished job's state (``ok``, ``pruned``, ``failed``) and objective, from metrics.json."""
    from mnistapp.reporting.records import read_metrics

    try:
        record = read_metrics(Path(output_dir))
    except (FileNotFoundError, ValueError):
        return "failed", None
    value = record.get(metric)
    finite = isinstance(value, int | float) and math.isfinite(value)
    if record.get("status") == "pruned":
        return "pruned", value if finite else None
    if record.get("status") == "ok" and finite:
        return "ok", float(value)
    if record.get("status") == "ok":
        numbers = sorted(k for k, v in record.items() if isinstance(v, int | float))
        log.warning(
            "%s: no finite %r in metrics.json (hydra.sweeper.metric); it has: %s",
            output_dir,
            metric,
            ", ".join(numbers),
        )
    return "failed", None


class OptunaSweeper(Sweeper):
    """Ask Optuna for ``n_jobs`` trials at a time, launch them as jobs, tell it their outcome."""

    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: str,
        metric: str,
        n_trials: int,
        n_jobs: int,
        sampler: DictConfig | None,
        pruner: DictConfig | None,
        params: DictConfig | None,
    ) -> None:
        self.study_name, self.storage = study_name, storage or None
        self.direction, self.metric = direction, metric
        self.n_trials, self.n_jobs = n_trials, n_jobs
        # configs (`_recursive_: false`): the sampler's seed depends on the study, below
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Called by Hydra before :meth:`sweep`: make the launcher that runs the trials."""
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _check(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"hydra.sweeper.direction must be maximize or minimize (got {self.direction!r})"
            )
        for key in ("n_trials", "n_jobs"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"hydra.sweeper.{key} must be an integer >= 1")

    def _sampler(self, trials_before: int) -> Any:
        """The configured sampler; a resumed study's seed moves on by its trial count, or the
        same command would propose the same trials again."""
        if not self.sampler_cfg:
            return None
        seed = self.sampler_cfg.get("seed")
        if seed is None:
            return instantiate(self.sampler_cfg)
        return instantiate(self.sampler_cfg, seed=seed + trials_before)

    def sweep(self, arguments: list[str]) -> list[Any]:
        """Run ``n_trials`` trials, adding to the study when it is already in the storage."""
        import optuna

        self._check()
        space, fixed = search_space(self.params, arguments)
        if not space:
            raise ConfigError("hydra.sweeper.params is empty: nothing to search")
        if self.storage and self.storage.startswith(SQLITE):
            # a first search makes its database, folder included (outputs/ on a fresh clone)
            Path(self.storage[len(SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            direction=self.direction,
            pruner=instantiate(self.pruner_cfg) if self.pruner_cfg else None,
            load_if_exists=True,
        )
        before = len(study.trials)
        study.sampler = self._sampler(before)
        if before:
            log.info(
                "Study %r in %s: %d trials already, adding %d",
                self.study_name,
                self.storage,
                before,
                self.n_trials,
            )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Any] = []
        while len(returns) < self.n_trials:
            batch = [
                study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - len(returns)))
            ]
            overrides = [
                [*fixed, *(f"{k}={v}" for k, v in t.params.items()), f"++{TRIAL_KEY}={t.number}"]
                for t in batch
            ]
            try:
                self.validate_batch_is_legal(overrides)
                launched = self.launcher.launch(overrides, initial_job_idx=len(returns))
            except BaseException:
                for trial in batch:  # not left RUNNING in a saved study
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            for trial, ret in zip(batch, launched, strict=True):
                state, value = job_outcome(ret.hydra_cfg.hydra.runtime.output_dir, self.metric)
                if state == "ok":
                    study.tell(trial, value)
                elif state == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            returns.extend(launched)
        self._save_results(study, sweep_dir)
        return returns

    def _save_results(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": self.study_name,
            "storage": self.storage,
            "metric": self.metric,
            "direction": self.direction,
            "trials": len(study.trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
        }
        if done:
            results |= {
                "best_trial": study.best_trial.number,
                "best_params": study.best_params,
                "best_value": study.best_value,
            }
            log.info(
                "Best trial %d: %s = %.4g with %s",
                study.best_trial.number,
                self.metric,
                study.best_value,
                study.best_params,
            )
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
