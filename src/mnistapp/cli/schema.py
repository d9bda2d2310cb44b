"""The values a user sets, checked right after Hydra composes: before torch is imported and
before the run folder exists, so a mistyped value is answered at once.

:data:`RULES` holds only what nothing else checks before the run starts (a key the config lacks
is skipped: ``model.depth`` exists for some models only); the model constructors, the DataModule
and Lightning check the rest, and ``cli.train`` turns their refusals into the same one line.
"""

from __future__ import annotations

import fcntl
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnistapp.errors import CheckpointError, ConfigError, fail
from mnistapp.files import checkpoint_file


@dataclass(frozen=True)
class Rule:
    """A number from ``low`` (to ``high``; ``bounds`` says which ends are open), or a choice."""

    integer: bool = False
    low: float = 0
    high: float | None = None
    bounds: str = "[]"
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        noun = "an integer" if self.integer else "a finite number"
        low, high = (int(x) if float(x).is_integer() else x for x in (self.low, self.high or 0))
        if self.high is None:
            return f"{noun} {'>' if self.bounds[0] == '(' else '>='} {low}"
        return f"{noun} in {self.bounds[0]}{low}, {high}{self.bounds[1]}"

    def accepts(self, value: Any) -> bool:
        if self.choices:
            same_kind = isinstance(value, bool) == isinstance(self.choices[0], bool)
            return value in self.choices and same_kind
        if isinstance(value, bool) or not isinstance(value, int if self.integer else int | float):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.bounds[0] == "(" else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.bounds[1] == ")" else value <= self.high)


COUNT, POSITIVE, NON_NEGATIVE = Rule(True, 1), Rule(bounds="(]"), Rule()
FRACTION, RATE, BOOL = Rule(high=1), Rule(high=1, bounds="[)"), Rule(choices=(True, False))

DATA = {
    "data.batch_size": COUNT,
    "data.eval_batch_size": COUNT,
    "data.val_size": Rule(True, 0, 60_000, "[)"),
    "data.split_seed": Rule(True),
    "data.mean": FRACTION,
    "data.std": POSITIVE,
    "seed": Rule(True, 0, 2**32, "[)"),  # numpy's seeds are 32-bit
}
RULES: dict[str, dict[str, Rule]] = {
    "train": {
        **DATA,
        "model.width": COUNT,
        "model.depth": COUNT,
        "model.dropout": RATE,
        "model.dropout_conv": RATE,
        "model.dropout_dense": RATE,
        "model.growth": POSITIVE,
        "model.pointwise": Rule(True),
        "optimizer.lr": POSITIVE,
        "optimizer.momentum": FRACTION,
        "optimizer.weight_decay": NON_NEGATIVE,
        "scheduler.max_lr": POSITIVE,
        "scheduler.factor": Rule(high=1, bounds="()"),
        "scheduler.patience": Rule(True),
        "scheduler.T_max": COUNT,
        "scheduler.eta_min": NON_NEGATIVE,
        "trainer.max_epochs": COUNT,
        "trainer.log_every_n_steps": COUNT,
        "trainer.check_val_every_n_epoch": COUNT,
        "max_loss": POSITIVE,
        "channels_last": BOOL,
        "compile": BOOL,
        "callbacks.early_stopping.patience": Rule(True),
        "callbacks.progress_bar.refresh_rate": Rule(True),
    },
    "eval": {**DATA, "plots.tsne_samples": Rule(True, 20)},
    "predict": {"batch_size": COUNT, "print_rows": Rule(True)},
    "export": {
        **DATA,
        "format": Rule(choices=("onnx", "torchscript")),
        "verify_batch": Rule(True, 2),
        "tolerance": POSITIVE,
    },
}


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value of ``cfg`` that breaks its rule
    (:class:`CheckpointError` for a ``ckpt_path`` that names no file)."""
    absent = object()
    for key, rule in RULES.get(str(cfg.get("task_name")), {}).items():
        value = OmegaConf.select(cfg, key, default=absent)
        if value is not absent and not rule.accepts(value):
            raise ConfigError(f"{key} must be {rule.describe()} (got {value!r})")
    betas = OmegaConf.select(cfg, "optimizer.betas")
    if betas is not None and not (len(betas) == 2 and all(FRACTION.accepts(b) for b in betas)):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1] (got {list(betas)})")
    # a missing checkpoint is answered before torch is imported, not 5 s later by the loader
    if cfg.get("ckpt_path") or cfg.get("task_name") in ("eval", "predict", "export"):
        checkpoint_file(cfg.get("ckpt_path"))
    check_devices(cfg)


def check_devices(cfg: DictConfig) -> None:
    """Refuse more devices than this machine has: GPUs, or CPU cores for DDP processes (which
    Lightning would start however many there are); Lightning refuses ``devices=0`` itself."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    wants_gpu = accelerator in ("gpu", "cuda")
    if not isinstance(devices, int) or (devices <= 1 and not wants_gpu):
        return
    gpus = 0
    if wants_gpu or accelerator == "auto":
        import torch  # only here: a plain CPU run never needs to ask

        gpus = torch.cuda.device_count()
    if wants_gpu and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} needs a GPU, and this machine has none "
            "(use trainer=cpu or trainer.accelerator=auto)"
        )
    if gpus and devices > gpus:
        raise ConfigError(f"trainer.devices={devices}, but this machine has {gpus} GPU(s)")
    cores = os.cpu_count() or 1
    if not gpus and devices > cores:
        raise ConfigError(
            f"trainer.devices={devices}: one process per device, and this machine has {cores} "
            "CPU cores"
        )


def is_resume(run_dir: Path, ckpt_path: object) -> bool:
    """True when a run goes on from a checkpoint of its own folder (``resume=``)."""
    if not ckpt_path:
        return False
    ckpt = Path(str(ckpt_path)).expanduser().resolve()
    return ckpt.parent == (Path(run_dir).resolve() / "checkpoints")


class Preflight(Callback):
    """Hydra callback: check the values, then claim the run folder before Hydra writes to it: a
    new or empty one, or its own when it resumes (locked by ``.lock`` while the process lives)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning: a refusal exits here
        try:
            check(config)
            # a DDP rank other than 0 (started by Lightning into rank 0's folder), or a rank
            # started by SLURM's srun beside the others (runtime.run_time): rank 0 made it
            srun_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
            if os.environ.get("LOCAL_RANK", "0") != "0" or srun_tasks > 1:
                return
            self._claim(Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser(), config)
        except (ConfigError, CheckpointError) as err:
            fail(str(config.get("task_name", "run")), err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            _make(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser())
        except ConfigError as err:
            fail(str(config.get("task_name", "run")), err)

    def _claim(self, run_dir: Path, config: DictConfig) -> None:
        resume = is_resume(run_dir, config.get("ckpt_path"))
        if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} already holds a run, and a run never writes over another: leave out "
                f"hydra.run.dir (or resume={run_dir} to continue that run)"
            )
        _make(run_dir)
        if resume:
            self.lock = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"{run_dir} is being resumed by another process (it holds {run_dir}/.lock)"
                ) from None


def _make(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot write the run folder {err.filename}: {err.strerror} (see paths.log_dir)"
        ) from None
