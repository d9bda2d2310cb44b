"""Every value a user sets, checked in one place before anything heavy runs.

Each entry point checks its composed config against :data:`RULES` (a key that the config does not
have is skipped: ``model.depth`` exists for some models only) and against the machine
(:func:`check_machine`). The first bad value is a :class:`ConfigError` whose message names the
key, what it must be and what it got, e.g. ``model.width must be an integer >= 1 (got 0)``;
``cli.task`` prints it as one line and exits with status 2. Knobs a model checks itself (its
layers must fit the image) fail the same way when the model is built.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# Lightning's names; the bare numbers are its older spellings (an override `=32` is an int)
log = logging.getLogger(__name__)

PRECISIONS = (
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "64-true",
    "bf16-true",
    "16-true",
    "32",
    "16",
    "64",
    "bf16",
    32,
    16,
    64,
)
HALF_PRECISIONS = ("16-mixed", "16-true", "16", 16)


class ConfigError(ValueError):
    """A setting the user gave is of the wrong type or out of range."""


@dataclass(frozen=True)
class Rule:
    """What one setting must be: an integer or a number within bounds, or one of some choices."""

    kind: str  # "integer", "number" or "choice"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself not allowed
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    optional: bool = False  # null allowed

    def describe(self) -> str:
        """``an integer >= 1``, ``a number in (0, 1)``, ``one of [...]``."""
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        noun = "an integer" if self.kind == "integer" else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {_num(self.high)}"
        return noun

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "integer" and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def integer(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule("integer", low, high, **kw)


def number(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule("number", low, high, **kw)


def choice(*choices: Any) -> Rule:
    return Rule("choice", choices=choices)


POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
FRACTION = number(0, 1)
COUNT = integer(1)

# What the data config holds, for every entry point.
DATA_RULES: dict[str, Rule] = {
    "data.batch_size": COUNT,
    "data.eval_batch_size": COUNT,
    "data.val_size": integer(0, 60_000, high_open=True),
    "data.split_seed": integer(0),
    "data.mean": number(0, 1),
    "data.std": POSITIVE,
    "data.num_classes": integer(2),
    "data.channels": COUNT,
    "data.image_size": COUNT,
    "seed": integer(0),
}

RULES: dict[str, dict[str, Rule]] = {
    "train": {
        **DATA_RULES,
        "model.width": COUNT,
        "model.depth": COUNT,
        "model.dropout": number(0, 1, high_open=True),
        "model.dropout_conv": number(0, 1, high_open=True),
        "model.dropout_dense": number(0, 1, high_open=True),
        "model.growth": POSITIVE,
        "model.pointwise": integer(0),
        "optimizer.lr": POSITIVE,
        "optimizer.momentum": FRACTION,
        "optimizer.weight_decay": NON_NEGATIVE,
        "scheduler.scheduler.max_lr": POSITIVE,
        "scheduler.scheduler.factor": number(0, 1, low_open=True, high_open=True),
        "scheduler.scheduler.patience": integer(0),
        "scheduler.scheduler.T_max": COUNT,
        "scheduler.scheduler.eta_min": NON_NEGATIVE,
        "trainer.max_epochs": COUNT,
        "max_loss": POSITIVE,
        "channels_last": choice(True, False),
        "trainer.precision": choice(*PRECISIONS),
        "trainer.accelerator": choice("auto", "cpu", "gpu", "cuda", "mps"),
        "trainer.log_every_n_steps": COUNT,
        "trainer.check_val_every_n_epoch": COUNT,
        "callbacks.early_stopping.patience": integer(0),
        "callbacks.progress_bar.refresh_rate": integer(0),
    },
    "eval": {**DATA_RULES, "plots.tsne_samples": integer(20)},
    "predict": {"batch_size": COUNT, "print_rows": integer(0)},
    "export": {
        **DATA_RULES,
        "format": choice("onnx", "torchscript"),
        "verify_batch": integer(2),
        "tolerance": POSITIVE,
    },
}


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node[part]
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return True, node


def check_values(cfg: DictConfig, rules: Mapping[str, Rule]) -> None:
    """Raise :class:`ConfigError` for the first value of ``cfg`` that breaks its rule."""
    for key, rule in rules.items():
        present, value = _lookup(cfg, key)
        if present and not rule.accepts(value):
            raise ConfigError(f"{key} must be {rule.describe()} (got {value!r})")
    betas = _lookup(cfg, "optimizer.betas")[1]
    if betas is not None and not (
        isinstance(betas, list) and len(betas) == 2 and all(FRACTION.accepts(b) for b in betas)
    ):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1] (got {betas!r})")


def check_machine(cfg: DictConfig) -> None:
    """Refuse what this machine cannot run (a GPU it does not have); warn about fp16 on a CPU.

    fp16 on a CPU does run (torch autocasts to float16 there too) but in software, usually
    slower than 32-true: bf16-mixed is the CPU's mixed precision.
    """
    trainer = cfg.get("trainer")
    if trainer is None:
        return
    accelerator = str(trainer.get("accelerator", "auto"))
    precision = trainer.get("precision", "32-true")
    devices = trainer.get("devices", 1)
    wants_gpu = accelerator in ("gpu", "cuda")
    if not (wants_gpu or precision in HALF_PRECISIONS):
        return
    import torch  # only here: most runs never need to ask

    gpus = torch.cuda.device_count()
    if wants_gpu and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} needs a GPU, and this machine has none "
            "(use trainer=cpu or trainer.accelerator=auto)"
        )
    if wants_gpu and isinstance(devices, int) and devices > gpus:
        raise ConfigError(f"trainer.devices={devices}, but this machine has {gpus} GPU(s)")
    if precision in HALF_PRECISIONS and (accelerator == "cpu" or gpus == 0):
        log.warning(
            "trainer.precision=%s on the CPU: float16 runs in software there, usually slower "
            "than 32-true; bf16-mixed is the CPU's mixed precision",
            precision,
        )


def check(task: str, cfg: DictConfig) -> None:
    """All checks for entry point ``task`` (``train``, ``eval``, ``predict``, ``export``)."""
    check_values(cfg, RULES[task])
    resume_from = cfg.get("ckpt_path") if task == "train" else None
    if resume_from and not Path(str(resume_from)).expanduser().is_file():
        raise ConfigError(f"ckpt_path={resume_from} is not a checkpoint file")
    if task != "predict":
        check_machine(cfg)
