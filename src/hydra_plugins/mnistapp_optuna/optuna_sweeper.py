"""``hydra/sweeper=optuna``: a Hydra sweeper on Optuna >= 4, with saved studies and pruning.

Not ``hydra-optuna-sweeper``: its 1.3 release pins Optuna < 3 (whose sqlite storage fails under
SQLAlchemy 2), and a Hydra sweeper cannot prune, as it sees only a job's return value. Each trial
is a multirun job with ``tune.trial=<number>``; :class:`mnistapp.training.tuning.OptunaPruning`
reports its epochs to the saved study. Hydra finds sweepers only in ``hydra_plugins``.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where a dataclass with string annotations fails (installed from a wheel).
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnistapp.errors import ConfigError

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"  # read by mnistapp.reporting.sweeps
SQLITE = "sqlite:///"
Suggest = Callable[[Any], Any]  # draws one parameter's value for an optuna.trial.Trial


def suggestion(override: Override) -> Suggest:
    """How a trial draws a sweep override: ``choice``, ``range``, ``[tag(log,)] interval``."""
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep | RangeSweep):
        choices = list(override.sweep_iterator(transformer=lambda x: x))
        return lambda trial: trial.suggest_categorical(key, choices)
    if isinstance(value, IntervalSweep):
        log_scale, low, high = "log" in value.tags, value.start, value.end
        if isinstance(low, int) and isinstance(high, int):
            return lambda trial: trial.suggest_int(key, low, high, log=log_scale)
        return lambda trial: trial.suggest_float(key, float(low), float(high), log=log_scale)
    raise ConfigError(f"{override.input_line}: not a sweep (use choice, range or interval)")


def search_space(
    params: Mapping[str, str], arguments: Sequence[str]
) -> tuple[dict[str, Suggest], list[str]]:
    """The search space and the fixed overrides of ``params`` and the command line (which wins)."""
    space: dict[str, Suggest] = {}
    fixed: list[str] = []
    overrides = [*(f"{k}={v}" for k, v in params.items()), *arguments]
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            space[override.get_key_element()] = suggestion(override)
        else:
            space.pop(override.get_key_element(), None)
            fixed.append(override.input_line)
    return space, fixed


def ask(study: Any, space: Mapping[str, Suggest], sampler: Callable[[int], Any]) -> Any:
    """A new trial drawn by ``sampler(trial number)``: the storage numbers the trials, so parallel
    workers on one study draw apart, and one search is reproducible."""
    trial = study.ask()
    study.sampler = sampler(trial.number) or study.sampler
    for suggest in space.values():
        suggest(trial)
    return trial


def job_outcome(output_dir: str | Path, metric: str) -> tuple[Any, float | None]:
    """A finished job's Optuna ``TrialState`` and objective, from its metrics.json."""
    from optuna.trial import TrialState

    from mnistapp.reporting.records import read_metrics

    try:
        record = read_metrics(Path(output_dir))
    except (FileNotFoundError, ValueError):
        return TrialState.FAIL, None
    value, status = record.get(metric), record.get("status")
    if status == "pruned":
        return TrialState.PRUNED, None
    if status == "ok" and isinstance(value, int | float) and math.isfinite(value):
        return TrialState.COMPLETE, float(value)
    if status == "ok":
        numbers = ", ".join(sorted(k for k, v in record.items() if isinstance(v, int | float)))
        log.warning("%s: no finite %r in metrics.json (hydra.sweeper.metric); it has: %s",
                    output_dir, metric, numbers)  # fmt: skip
    return TrialState.FAIL, None


@dataclass(eq=False)
class OptunaSweeper(Sweeper):
    """Ask Optuna for ``n_jobs`` trials at a time, launch them as jobs, tell it their outcome."""

    study_name: str
    storage: str | None
    direction: str
    metric: str
    n_trials: int
    n_jobs: int
    sampler: DictConfig | None  # configs (`_recursive_: false`): a sampler is made per trial
    pruner: DictConfig | None
    params: DictConfig | None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context  # both read by Sweeper's methods
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _sampler(self, number: int) -> Any:
        """The configured sampler for trial ``number``, its seed moved on by the number."""
        seed = self.sampler.get("seed") if self.sampler else None
        if seed is None:
            return instantiate(self.sampler) if self.sampler else None
        return instantiate(self.sampler, seed=seed + number)

    def sweep(self, arguments: list[str]) -> list[Any]:
        """Run ``n_trials`` trials, adding to the study when it is already in the storage."""
        import optuna

        TrialState = optuna.trial.TrialState
        # checked here, not in __init__: Hydra wraps what a constructor raises in its own error
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"hydra.sweeper.direction must be maximize or minimize (got {self.direction!r})"
            )
        for key in ("n_trials", "n_jobs"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"hydra.sweeper.{key} must be an integer >= 1")
        params = OmegaConf.to_container(self.params) if self.params else {}
        space, fixed = search_space(params, arguments)  # type: ignore[arg-type]
        if not space:
            raise ConfigError("hydra.sweeper.params is empty: nothing to search")
        self.storage = self.storage or None
        if self.storage and self.storage.startswith(SQLITE):  # a first search makes its folder
            Path(self.storage[len(SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
        try:
            storage = optuna.storages.get_storage(self.storage)
        except Exception as err:  # SQLAlchemy's: an unknown dialect, a malformed URL
            raise ConfigError(f"tune.storage={self.storage} cannot be opened: {err}") from None
        pruner = instantiate(self.pruner) if self.pruner else None
        study = optuna.create_study(storage=storage, study_name=self.study_name, pruner=pruner,
                                    direction=self.direction, load_if_exists=True)  # fmt: skip
        if study.trials:
            log.info("Study %r in %s: %d trials already, adding %d",
                     self.study_name, self.storage, len(study.trials), self.n_trials)  # fmt: skip
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Any] = []
        while len(returns) < self.n_trials:
            size = min(self.n_jobs, self.n_trials - len(returns))
            batch = [ask(study, space, self._sampler) for _ in range(size)]
            overrides = [
                [*fixed, *(f"{k}={v}" for k, v in t.params.items()), f"++tune.trial={t.number}"]
                for t in batch
            ]
            try:
                self.validate_batch_is_legal(overrides)
                launched = self.launcher.launch(overrides, initial_job_idx=len(returns))
            except BaseException:  # a signal, a dead worker: not left RUNNING in a saved study
                for trial in batch:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, ret in zip(batch, launched, strict=True):
                state, value = job_outcome(ret.hydra_cfg.hydra.runtime.output_dir, self.metric)
                study.tell(trial, value, state=state)
            returns.extend(launched)
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": self.study_name,
            "storage": self.storage,
            "metric": self.metric,
            "direction": self.direction,
            "trials": len(study.trials),
            "pruned": len(study.get_trials(states=(TrialState.PRUNED,))),
        }
        if study.get_trials(states=(TrialState.COMPLETE,)):
            best = study.best_trial
            results |= {"best_trial": best.number, "best_params": best.params,
                        "best_value": best.value}  # fmt: skip
            log.info("Best trial %d: %s = %.4g with %s",
                     best.number, self.metric, best.value, best.params)  # fmt: skip
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        return returns
