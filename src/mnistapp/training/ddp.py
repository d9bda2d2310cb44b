"""DDP inside a Hydra multirun: each job's child processes run that job, not the whole sweep.

Lightning starts ranks above 0 by running the command line again with ``hydra.run.dir`` set: in
a multirun that is the whole sweep again, into a stray folder. And the variables it exports for
the children (``LOCAL_RANK``, ...) and its process group stayed, so the next job believed a
cluster had started its processes and launched none."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from mnistapp.runtime import is_multirun

# Set by Lightning's subprocess launcher in the process that starts the children.
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Lightning has no public hook for the children's command: its private _hydra_subprocess_cmd is
# replaced, on this version only (test_ddp_inside_a_search_trains_each_trial_once).
PATCHED_LIGHTNING = "2.6."


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """This multirun job as a single run in its own folder: what DDP rank ``local_rank`` runs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:  # python train.py
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:  # python -m mnistapp.cli.train, mnistapp-train
        command = [sys.executable, "-m", __main__.__spec__.name]
    return [
        *command,
        *hydra_cfg.overrides.task,  # the job's own values, one per swept key
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",  # rank 0 already wrote the job's .hydra/ folder
        "hydra.mode=RUN",  # a single run, even when the job's overrides hold a search
    ], get_original_cwd()


@contextmanager
def ddp_runs_this_job() -> Iterator[None]:
    """Around a multirun job's fit and test: DDP children run the job and leave nothing behind."""
    if not is_multirun():  # Lightning's own command is right outside a multirun
        yield
        return
    import lightning
    import torch.distributed as dist
    from lightning.pytorch.strategies.launchers import subprocess_script as launcher

    if not lightning.__version__.startswith(PATCHED_LIGHTNING):
        raise RuntimeError(
            f"mnistapp.training.ddp replaces Lightning's private _hydra_subprocess_cmd, checked "
            f"on Lightning {PATCHED_LIGHTNING}x, not {lightning.__version__}: check it, then update"
        )
    saved = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    lightnings, launcher._hydra_subprocess_cmd = launcher._hydra_subprocess_cmd, job_command
    try:
        yield
    finally:
        launcher._hydra_subprocess_cmd = lightnings
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
