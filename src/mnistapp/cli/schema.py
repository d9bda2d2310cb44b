"""The values a user sets, checked right after Hydra composes: before torch is imported and
before the run folder exists, so a mistyped value is answered at once.

:data:`RULES` holds what nothing else checks before the run starts (a key the config lacks is
skipped: ``model.depth`` exists for some models only). Everything else is checked where it is
used: the model constructors (activations, layers that must fit the image), the DataModule, the
transforms, and Lightning itself (``trainer.precision``, ``trainer.accelerator``): ``cli.train``
turns their refusals into the same one line. :class:`Preflight` (a Hydra callback, in
``conf/hydra/default.yaml``) runs the checks and guards the run folder.
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

from mnistapp.errors import ConfigError, fail


@dataclass(frozen=True)
class Rule:
    """A number within bounds (``integer``: an int), or one of ``choices``."""

    integer: bool = False
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        noun = "an integer" if self.integer else "a finite number"
        num = lambda x: str(int(x)) if float(x).is_integer() else str(x)  # noqa: E731
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"{noun} in {left}{num(self.low)}, {num(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'>' if self.open_low else '>='} {num(self.low)}"
        return noun

    def accepts(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices and isinstance(value, bool) == isinstance(
                self.choices[0], bool
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if (self.integer and not isinstance(value, int)) or not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return low_ok and (
            self.high is None or (value < self.high if self.open_high else value <= self.high)
        )


COUNT, POSITIVE, NON_NEGATIVE = Rule(True, 1), Rule(low=0, open_low=True), Rule(low=0)
FRACTION, RATE = Rule(low=0, high=1), Rule(low=0, high=1, open_high=True)

DATA = {
    "data.batch_size": COUNT,
    "data.eval_batch_size": COUNT,
    "data.val_size": Rule(True, 0, 60_000, open_high=True),
    "data.split_seed": Rule(True, 0),
    "data.mean": FRACTION,
    "data.std": POSITIVE,
    "seed": Rule(True, 0, 2**32, open_high=True),  # numpy's seeds are 32-bit
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
        "model.pointwise": Rule(True, 0),
        "optimizer.lr": POSITIVE,
        "optimizer.momentum": FRACTION,
        "optimizer.weight_decay": NON_NEGATIVE,
        "scheduler.max_lr": POSITIVE,
        "scheduler.factor": Rule(low=0, high=1, open_low=True, open_high=True),
        "scheduler.patience": Rule(True, 0),
        "scheduler.T_max": COUNT,
        "scheduler.eta_min": NON_NEGATIVE,
        "trainer.max_epochs": COUNT,
        "trainer.log_every_n_steps": COUNT,
        "trainer.check_val_every_n_epoch": COUNT,
        "max_loss": POSITIVE,
        "channels_last": Rule(choices=(True, False)),
        "compile": Rule(choices=(True, False)),
        "callbacks.early_stopping.patience": Rule(True, 0),
        "callbacks.progress_bar.refresh_rate": Rule(True, 0),
    },
    "eval": {**DATA, "plots.tsne_samples": Rule(True, 20)},
    "predict": {"batch_size": COUNT, "print_rows": Rule(True, 0)},
    "export": {
        **DATA,
        "format": Rule(choices=("onnx", "torchscript")),
        "verify_batch": Rule(True, 2),
        "tolerance": POSITIVE,
    },
}


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value of ``cfg`` that breaks its rule."""
    absent = object()
    for key, rule in RULES.get(str(cfg.get("task_name")), {}).items():
        value = OmegaConf.select(cfg, key, default=absent)
        if value is not absent and not rule.accepts(value):
            raise ConfigError(f"{key} must be {rule.describe()} (got {value!r})")
    betas = OmegaConf.select(cfg, "optimizer.betas")
    if betas is not None and not (len(betas) == 2 and all(FRACTION.accepts(b) for b in betas)):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1] (got {list(betas)})")
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


def _child_rank() -> bool:
    """A DDP rank other than 0 (started by Lightning into rank 0's folder), or a rank started by
    SLURM's ``srun`` beside the others (they share ``slurm-<job>.<step>``, see runtime.run_time)."""
    return (
        os.environ.get("LOCAL_RANK", "0") != "0"
        or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1
    )


class Preflight(Callback):
    """Hydra callback: check the values, then the run folder, before Hydra makes or writes it.

    A run goes only into a new or empty folder, or its own folder when it resumes from one of
    that folder's checkpoints; two resumes of one run are kept apart by a lock (``.lock``, held
    while the process lives).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning: a refusal exits here
        try:
            self._check(config)
        except ConfigError as err:
            fail(str(config.get("task_name", "run")), err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            _make(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser())
        except ConfigError as err:
            fail(str(config.get("task_name", "run")), err)

    def _check(self, config: DictConfig) -> None:
        check(config)
        if _child_rank():
            return
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser()
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
