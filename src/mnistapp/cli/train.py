"""``python train.py [overrides]``: compose ``conf/``, build the Lightning pair, fit, test the best
checkpoint. torch is imported inside the functions, so ``--help`` and a bad value answer at once."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnistapp.cli.task import entry_point, fail, run_task
from mnistapp.errors import CheckpointError, ConfigError
from mnistapp.reporting.records import scalar_metrics

RESULT_KEYS = ("model", "test/acc", "test/f1", "val/f1_best", "params_total", "params_trainable",
               "epochs", "epoch_time_s", "best_ckpt")  # fmt: skip
# the keys of a scheduler config that are Lightning's (its lr_scheduler dict), not the scheduler's
LIGHTNING_SCHEDULER_KEYS = ("interval", "frequency", "monitor", "strict", "name")
# an override a resume replays: the plain value of a setting or a group's option; never `+`/`~`
REPLAYABLE = re.compile(r"[A-Za-z]\w*([./][A-Za-z]\w*)*=")


@dataclass
class Run:
    """What :func:`build` makes from a config, before the fit."""

    datamodule: Any
    module: Any  # the Classifier
    trainer: Any
    info: dict[str, Any]  # model name and parameter counts, for the record


def build(cfg: DictConfig, model_name: str | None = None) -> Run:
    """Seed, then instantiate the DataModule, Classifier, callbacks, loggers and Trainer."""
    import lightning as L
    import torch
    from hydra.core.hydra_config import HydraConfig
    from lightning.pytorch.callbacks import LearningRateMonitor

    from mnistapp.models import count_parameters
    from mnistapp.runtime import provenance
    from mnistapp.training.module import Classifier

    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    datamodule = _instantiate("data", cfg.data)
    net = _instantiate("model", cfg.model)
    scheduler = None
    if cfg.get("scheduler"):
        options = OmegaConf.to_container(cfg.scheduler, resolve=True)
        lightning = {k: options.pop(k) for k in LIGHTNING_SCHEDULER_KEYS if k in options}
        scheduler = {"scheduler": instantiate(options), **lightning}
    if not model_name and HydraConfig.initialized():
        model_name = HydraConfig.get().runtime.choices.get("model")
    module = Classifier(
        net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        num_classes=cfg.data.num_classes,
        class_names=datamodule.class_names,
        net_config=OmegaConf.to_container(cfg.model, resolve=True),
        model_name=model_name,
        max_loss=cfg.max_loss,
        channels_last=cfg.get("channels_last", False),
        compile=cfg.get("compile", False),
    )
    loggers = _instantiate_each(cfg.get("logger"))
    callbacks = _instantiate_each(cfg.get("callbacks"))
    if not loggers:
        # LearningRateMonitor refuses a logger-less trainer (W&B off, or a DDP rank other than 0)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = _instantiate("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainable, total = count_parameters(net)
    info = {"model": model_name, "params_trainable": trainable, "params_total": total}
    # without Hydra's own node: a config composed in-process (tests.helpers.compose) holds it
    config = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    hparams = {"config": OmegaConf.to_container(config, resolve=True), **info}
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams | {"provenance": provenance()})
    return Run(datamodule, module, trainer, info)


def _instantiate(group: str, node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate``; a value the class refuses (a knob out of range, a precision Lightning
    does not know) is a one-line ``ConfigError``."""
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | TypeError | MisconfigurationException):
            raise ConfigError(f"{group}: {err.__cause__}") from None
        raise


def _instantiate_each(nodes: DictConfig | None) -> list[Any]:
    return [instantiate(node) for node in (nodes or {}).values() if node and "_target_" in node]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured model, test its best checkpoint and return the run's figures."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from mnistapp.training.checkpoints import restore
    from mnistapp.training.ddp import ddp_runs_this_job

    if cfg.get("ckpt_path"):  # a bad file, or another architecture: one line, before any fit
        restore(cfg.ckpt_path, cfg.model)
    if cfg.extras.print_config:
        print_config(cfg)
    with ddp_runs_this_job():
        try:
            return fit_and_test(cfg, build(cfg))
        except MisconfigurationException as err:  # e.g. limit_val_batches=0.1 of one batch
            raise ConfigError(f"trainer: {err}") from None


def print_config(cfg: DictConfig) -> None:
    """The composed config as a Rich tree, a branch per group (``extras.print_config``)."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    from mnistapp.runtime import is_rank_zero

    if not is_rank_zero():
        return
    tree = Tree("config", guide_style="dim")
    for key, node in cfg.items():
        if key != "hydra":
            text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else node
            tree.add(str(key)).add(Syntax(str(text).strip(), "yaml"))
    rich_print(tree)


def fit_and_test(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Fit ``run``, test its best checkpoint when ``cfg.test``; return the record."""
    from mnistapp.runtime import device_name
    from mnistapp.training.callbacks import find_callback
    from mnistapp.training.tuning import OptunaPruning

    datamodule, module, trainer = run.datamodule, run.module, run.trainer
    start = time.perf_counter()
    # weights_only: a checkpoint to resume from is loaded as data, never as code
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    fit_time = time.perf_counter() - start
    trained = trainer.current_epoch - module.start_epoch  # fewer than `epochs` when resumed
    # trainer.checkpoint_callback may be the interrupt checkpoint, which keeps no best
    best = [
        c.best_model_path for c in trainer.checkpoint_callbacks if hasattr(c, "best_model_path")
    ]
    record = {
        **run.info,
        "epochs": trainer.current_epoch,
        "fit_time_s": round(fit_time, 2),
        "epoch_time_s": round(fit_time / max(trained, 1), 2),
        "device": device_name(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        **scalar_metrics(trainer.callback_metrics),
        "best_ckpt": best[0] if best else None,
    }
    pruning = find_callback(trainer, OptunaPruning)
    if pruning is not None and pruning.pruned_at is not None:
        # an Optuna trial stopped as unpromising: recorded as such, and not tested
        return record | {"status": "pruned", "pruned_after_epoch": pruning.pruned_at}
    if cfg.get("test"):
        # verbose=False: the run's own result table follows
        ckpt = record["best_ckpt"] or None
        trainer.test(
            module, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True
        )
        record |= scalar_metrics(trainer.callback_metrics) | module.test_results
    return record


@hydra.main(version_base="1.3", config_path="pkg://mnistapp.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """``python train.py [overrides]``: returns ``val/f1_best`` for hyper-parameter sweepers."""
    from mnistapp.training.tracking import finish_runs

    record: dict[str, Any] = {}
    try:
        record = run_task(train, cfg, RESULT_KEYS)
    finally:
        # Multirun jobs share this process: each job must close its own W&B run.
        finish_runs(exit_code=0 if record.get("status") == "ok" else 1)
    value = record.get("val/f1_best")
    return value if value is not None and math.isfinite(value) else None


def expand_resume(argv: list[str]) -> list[str]:
    """``resume=<run dir>|latest``: that run's overrides (plain values only: a run folder is
    data), in its folder, from its newest checkpoint that loads; ``trainer.max_epochs`` may grow."""
    import yaml

    asked = [a for a in argv if a.startswith("resume=")]
    if not asked:
        return argv
    others = [a for a in argv if a not in asked]
    where = asked[-1].split("=", 1)[1]
    if where == "latest":
        log_dir = next((a.split("=", 1)[1] for a in others if a.startswith("paths.log_dir=")), None)
        run_dir = _latest_run(Path(log_dir or "outputs"))
    else:
        run_dir = Path(where).expanduser()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file() or not list(run_dir.glob("checkpoints/*.ckpt")):
        raise ConfigError(
            f"resume={where}: {run_dir} is not a run folder with checkpoints/last.ckpt"
        )
    try:
        original = yaml.safe_load(saved.read_text()) or []
    except yaml.YAMLError as err:
        raise ConfigError(f"resume: {saved} is not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(original, list) or not all(isinstance(o, str) for o in original):
        raise ConfigError(f"resume: {saved} is not a list of overrides")
    # ckpt_path and hydra.run.dir are what an earlier resume set: this one sets its own
    original = [o for o in original if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    untrusted = [
        o
        for o in original
        if not REPLAYABLE.match(o) or "_target_" in o or o.startswith(("hydra.", "hydra/"))
    ]
    if untrusted:
        raise ConfigError(
            f"resume: {saved} holds overrides a resume does not replay (only values of known "
            f"settings): {' '.join(untrusted)}"
        )
    grow = [o for o in others if o.startswith("trainer.max_epochs=")]
    changed = [o for o in others if o not in original and o not in grow]
    if changed:
        raise ConfigError(
            f"resume: {changed[0]} would make it another run than {run_dir} "
            "(only trainer.max_epochs may change)"
        )
    kept = [o for o in original if not o.startswith("trainer.max_epochs=")]
    grow = grow or [o for o in original if o.startswith("trainer.max_epochs=")]
    return [*kept, *grow, f"ckpt_path={_loadable(run_dir)}", f"hydra.run.dir={run_dir}"]


def _latest_run(log_dir: Path) -> Path:
    """The run with checkpoints that started last: by its ``metrics.json``, or when it has none
    (killed) by when Hydra wrote its config; never by folder name, and never a time to come."""

    def started(run_dir: Path) -> float:
        try:
            record = json.loads((run_dir / "metrics.json").read_text())
            return datetime.fromisoformat(record["started"]).timestamp()
        except (OSError, ValueError, KeyError, TypeError):
            return (run_dir / ".hydra" / "config.yaml").stat().st_mtime

    runs = {p.parent.parent for p in log_dir.glob("*/*/checkpoints/*.ckpt")}
    times = {run: started(run) for run in runs if (run / ".hydra" / "config.yaml").is_file()}
    times = {run: t for run, t in times.items() if t <= time.time() + 60}
    if not times:
        raise ConfigError(f"resume=latest: no run with a last.ckpt in {log_dir}")
    return max(times, key=times.__getitem__)


def _loadable(run_dir: Path) -> Path:
    """The newest checkpoint of ``run_dir`` that loads; saying so when it is not the newest."""
    from mnistapp.training.checkpoints import newest_loadable

    ckpt, problems = newest_loadable(run_dir / "checkpoints")
    if ckpt is None:
        raise CheckpointError(f"no checkpoint of {run_dir} loads: {problems[0]}")
    if problems:
        print(f"train: {problems[0]}; resuming from {ckpt}", file=sys.stderr, flush=True)
    return ckpt


def _main() -> Any:
    """``python train.py``: ``resume=`` expanded, then the Hydra main."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.mnistapp_optuna.optuna_sweeper import OptunaSweeper
    from hydra_plugins.mnistapp_optuna.resume_sweeper import ResumeSweeper

    # Hydra composes straight from sys.argv and has no hook that adds overrides before it, so
    # a resume puts the run's own overrides back on the command line.
    try:
        sys.argv[1:] = expand_resume(sys.argv[1:])
    except (ConfigError, CheckpointError) as err:
        fail("train", err)
    # Hydra finds plugins by listing the hydra_plugins namespace package, and the finder of an
    # editable install (pip install -e .) hides ours from that listing.
    for sweeper in (OptunaSweeper, ResumeSweeper):
        Plugins.instance().register(sweeper)
    return hydra_main()


# the console script and `python -m`: Hydra's own errors become one line (cli.task)
main = entry_point("train", _main)

if __name__ == "__main__":
    main()
