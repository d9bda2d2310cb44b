"""``hydra/sweeper=resume``: a basic sweep again, in its folder, running only the jobs that a
signal stopped or that never started, under their own numbers (an interrupted job goes on from
its ``last.ckpt``); the sweep summary prints the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from mnistapp.errors import ConfigError


class ResumeSweeper(Sweeper):
    """Launch the interrupted jobs of the sweep in ``hydra.sweep.dir``, one at a time."""

    def __init__(self, max_batch_size: int | None = None, params: Any = None) -> None:
        pass  # the basic sweeper's settings: the jobs are those of the sweep being resumed

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        from mnistapp.reporting.sweeps import NotASweepError, expand, summarize

        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            todo = [job.num for job in summarize(sweep_dir).having("interrupted")]
        except NotASweepError as err:
            raise ConfigError(f"hydra/sweeper=resume: {err}") from None
        jobs, returns = expand(arguments), []
        for num in todo:
            last = sweep_dir / str(num) / "checkpoints" / "last.ckpt"
            resume = [f"ckpt_path='{last}'"] if last.is_file() else []
            returns += self.launcher.launch([jobs[num] + resume], initial_job_idx=num)
        return returns
