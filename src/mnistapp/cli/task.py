"""What every entry point shares: run a task into ``metrics.json``, and one-line user errors.

:func:`run_task` is the task wrapper of train, eval, predict and export: it runs the task, writes
its record (also when it fails) and prints the result table. :func:`run_on_checkpoint` adds the
step eval, predict and export share before it: restoring ``ckpt_path`` safely.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from mnistapp.reporting.records import format_table, write_metrics
from mnistapp.runtime import is_multirun, is_rank_zero

if TYPE_CHECKING:
    from mnistapp.training.checkpoints import Restored

log = logging.getLogger(__name__)


@contextmanager
def user_errors(prog: str, *errors: type[Exception]) -> Iterator[None]:
    """Turn ``errors`` (a user's mistake, not a bug) into one line on stderr and exit status 1."""
    try:
        yield
    except errors as err:
        raise SystemExit(f"{prog}: error: {err}") from None


def run_task(
    task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig, summary_keys: tuple[str, ...]
) -> dict[str, Any]:
    """Run ``task``, then write its record to ``metrics.json`` and print the result table.

    A failure is written too (status ``failed`` with the error), so sweep summaries can list it.
    In a multirun it is logged and returned instead of raised, so the other jobs still run.
    """
    run_dir = Path(cfg.paths.output_dir)
    start = time.perf_counter()
    _one_console()
    try:
        record = {"status": "ok", **task(cfg)}
    except Exception as err:
        record = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        log.error("Run failed: %s\n%s", record["error"], traceback.format_exc())
        if not is_multirun():
            _save(run_dir, record, start)
            raise
    _save(run_dir, record, start)
    if is_rank_zero() and record["status"] == "ok":
        table = {k: record.get(k) for k in summary_keys} | {"run dir": str(run_dir)}
        print(format_table(f"{cfg.get('task_name', 'run')} result", table), flush=True)
    return record


def run_on_checkpoint(
    prog: str,
    task: Callable[..., dict[str, Any]],
    cfg: DictConfig,
    summary_keys: tuple[str, ...],
    prepare: Callable[[DictConfig, Restored], dict[str, Any]] | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> dict[str, Any]:
    """Restore ``cfg.ckpt_path`` (``model=`` asserts the architecture), then ``run_task``.

    ``task`` is called as ``task(cfg, restored=..., **prepare(cfg, restored))``. A bad checkpoint,
    and ``errors`` raised by ``prepare`` (checking the user's inputs), are one-line errors.
    """
    from mnistapp.training.checkpoints import CheckpointError, restore

    with user_errors(prog, CheckpointError, *errors):
        restored = restore(cfg.get("ckpt_path"), cfg.get("model"))
        extra = prepare(cfg, restored) if prepare else {}
    return run_task(partial(task, restored=restored, **extra), cfg, summary_keys)


def _one_console() -> None:
    """Print Lightning's messages once, through Hydra's console and ``train.log`` handlers.

    ``import lightning`` gives the ``lightning`` logger a console handler of its own while it still
    propagates to the root logger that Hydra configured, so every line appeared twice.
    """
    import lightning  # noqa: F401  (the import adds the handler we remove)

    logging.getLogger("lightning").handlers.clear()


def _save(run_dir: Path, record: dict[str, Any], start: float) -> None:
    record["wall_time_s"] = round(time.perf_counter() - start, 2)
    record["run_dir"] = str(run_dir)
    if is_rank_zero():
        write_metrics(run_dir, record)
