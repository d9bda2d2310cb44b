"""Where this process stands: DDP rank, multirun or not, a stop signal, its code and packages.

Light on imports (Lightning and Hydra are imported inside), since every entry point uses it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

_stopped_by: list[signal.Signals] = []


def is_rank_zero() -> bool:
    """True in the process that owns the run's files (rank 0 under DDP)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def is_multirun() -> bool:
    """True inside a Hydra multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside: Ctrl-C and SIGTERM stop the task, and are remembered (:func:`stopped_by`).

    Inside ``fit`` and ``test`` Lightning handles SIGTERM itself (calling this handler too): it
    stops at the next step with ``SIGTERMException``, so the interrupt checkpoint is that of a
    whole step. Elsewhere, and for Ctrl-C, a KeyboardInterrupt stops the task.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def stop(signum: int, frame: object) -> None:
        _stopped_by.append(signal.Signals(signum))
        if signum == signal.SIGINT or signal.getsignal(signum) is stop:  # not Lightning's
            raise KeyboardInterrupt

    _stopped_by.clear()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stopped_by() -> signal.Signals | None:
    """The signal that stopped the task inside :func:`stop_on_signals`, if one did."""
    return _stopped_by[0] if _stopped_by else None


@functools.cache
def provenance() -> dict[str, Any]:
    """This run's git commit (None for an installed wheel) and changes, versions and host."""

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "python": platform.python_version(),
        **{name: version(name) for name in ("mnistapp", "torch", "lightning", "torchmetrics")},
        "hydra": version("hydra-core"),
        "host": socket.gethostname(),
    }


def run_time(pattern: str = "%H-%M-%S-%f") -> str:
    """The run folder's last part: the time now, or ``slurm-<job>.<step>`` inside an ``srun``
    step of several tasks, where SLURM starts every DDP rank and each composes its own config."""
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return datetime.now().strftime(pattern)


def register_resolvers() -> None:
    """``${run_time:}`` (cached like ``${now:}``: one run, one folder name) and ``${join:${tags}}``
    (a list as one comma-separated string: an MLflow tag is one string)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_time", run_time, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("join", lambda items: ",".join(map(str, items)), replace=True)


def device_name(device: Any) -> str:
    """Where a run trained: the GPU's name, or the CPU and its core count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
