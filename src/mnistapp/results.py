"""Run bookkeeping shared by every entry point: metrics.json, the result table, failure records."""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnistapp.files import atomic_write

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def write_metrics(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``<run_dir>/metrics.json``, atomically: readers never see half a file."""
    path = Path(run_dir) / METRICS_FILE
    atomic_write(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    return path


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Read ``<run_dir>/metrics.json``."""
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The one-element tensors of ``trainer.callback_metrics`` as floats, sorted by name."""
    return {k: v.item() for k, v in sorted(metrics.items()) if v.numel() == 1}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(title: str, rows: Mapping[str, Any]) -> str:
    """A two-column text table, the one printed at the end of a run."""
    shown = {k: v for k, v in rows.items() if v is not None}
    width = max(map(len, shown), default=0)
    lines = [f"── {title} " + "─" * max(0, 44 - len(title))]
    lines += [f"  {key:<{width}}  {_fmt(value)}" for key, value in shown.items()]
    return "\n".join(lines)


@contextmanager
def user_errors(prog: str, *errors: type[Exception]) -> Iterator[None]:
    """Turn ``errors`` (a user's mistake, not a bug) into one line on stderr and exit status 1."""
    try:
        yield
    except errors as err:
        raise SystemExit(f"{prog}: error: {err}") from None


def is_rank_zero() -> bool:
    """True in the process that owns the run's files (rank 0 under DDP)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def is_multirun() -> bool:
    """True inside a Hydra multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


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
