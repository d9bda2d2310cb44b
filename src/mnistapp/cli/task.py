"""What every entry point shares: run a task into ``metrics.json``, and one-line user errors.

:func:`run_task` is the task wrapper of train, eval, predict and export: it checks the config
(:mod:`mnistapp.cli.validation`), runs the task, writes its record (also when it fails) and
prints the result table. :func:`run_on_checkpoint` adds the step eval, predict and export share
before it: restoring ``ckpt_path`` safely. :func:`entry_point` wraps each Hydra ``main`` so that
Hydra's own errors (an unknown option or key, bad override syntax) are one line too.

A user's mistake is one line on stderr, ``<prog>: error: <what>``, and exit status 2, with no
traceback; ``HYDRA_FULL_ERROR=1`` shows everything, for developers.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from omegaconf import DictConfig

from mnistapp.cli.validation import ConfigError, check
from mnistapp.data.sources import DataSourceError
from mnistapp.reporting.records import format_table, write_metrics
from mnistapp.runtime import (
    is_multirun,
    is_rank_zero,
    provenance,
    register_resolvers,
    stop_on_signals,
    stopped_by,
)
from mnistapp.training import DivergedError

if TYPE_CHECKING:
    from mnistapp.training.checkpoints import Restored

log = logging.getLogger(__name__)

# False until a task starts: an OSError before that is Hydra failing to make the run folder.
_tasks_started = False


def fail(prog: str, message: object) -> NoReturn:
    """Print ``<prog>: error: <message>`` on stderr and exit with status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@contextmanager
def user_errors(prog: str, *errors: type[Exception]) -> Iterator[None]:
    """Turn ``errors`` (a user's mistake, not a bug) into one line on stderr and exit status 2."""
    try:
        yield
    except errors as err:
        fail(prog, err)


def entry_point(prog: str, hydra_main: Callable[[], Any]) -> Callable[[], Any]:
    """``hydra_main`` (a ``@hydra.main`` function) with Hydra's own errors as one line.

    With ``HYDRA_FULL_ERROR=1`` Hydra raises its errors instead of printing a screen of them, so
    they are caught here and shortened; a developer who set it sees them whole.
    """
    from hydra.errors import ConfigCompositionException, OverrideParseException

    @functools.wraps(hydra_main)
    def main() -> Any:
        register_resolvers()
        developer = os.environ.get("HYDRA_FULL_ERROR") == "1"
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return hydra_main()
        except (ConfigCompositionException, OverrideParseException) as err:
            if developer:
                raise
            fail(prog, hydra_error_message(err))
        except ConfigError as err:  # raised outside a task: by the sweeper, checking its settings
            if developer:
                raise
            fail(prog, err)
        except OSError as err:
            if developer or _tasks_started:
                raise
            # Hydra could not make or write the run folder: before any task, nothing else writes
            fail(
                prog,
                f"cannot write the run folder {err.filename}: {err.strerror} (see paths.log_dir)",
            )

    return main


def hydra_error_message(err: Exception) -> str:
    """One line for a Hydra composition error, listing what would have been valid."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = str(err.missing_cfg_file).rpartition("/")
        hint = _did_you_mean(name, err.options)
        return f"{group}={name} is not an option{hint}; {group} is one of: {', '.join(err.options)}"
    cause = err.__cause__
    parent = getattr(cause, "parent_node", None)
    key = getattr(cause, "key", None)
    if key is not None and parent is not None and "not in struct" in str(cause):
        full_key = str(getattr(cause, "full_key", key))
        known = [str(k) for k in parent if not str(k).startswith("_")]
        hint = _did_you_mean(str(key), known)
        return (
            f"{full_key} is not a setting{hint}; its neighbours are: {', '.join(known)} "
            f"(to add a new key, write +{full_key}=...)"
        )
    lines = [line for line in str(err).splitlines() if line.strip()]
    if isinstance(err, OverrideParseException):
        lines = lines[:2]  # what failed, and the parser's reason; not the docs link
    return ": ".join(line.strip().rstrip(".") for line in lines[:2])


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def refuse_bad_config(prog: str, cfg: DictConfig) -> None:
    """Check ``cfg``; on a bad value exit 2 with one line and remove the run folder just made.

    In a multirun the error is raised instead, so the job is recorded as failed and the sweep
    goes on.
    """
    try:
        check(prog, cfg)
    except ConfigError as err:
        if is_multirun():
            raise
        _refuse(prog, Path(cfg.paths.output_dir), err)


def _refuse(prog: str, run_dir: Path, err: ConfigError) -> NoReturn:
    """Remove what Hydra wrote into the refused run's folder (and nothing else), then fail."""
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).unlink(missing_ok=True)
    for log_file in run_dir.glob("*.log"):
        log_file.unlink()
    for folder in (run_dir / ".hydra", run_dir, run_dir.parent):
        try:
            folder.rmdir()  # only when empty: anything else there is not ours to delete
        except OSError:
            break
    fail(prog, err)


def run_task(
    task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig, summary_keys: tuple[str, ...]
) -> dict[str, Any]:
    """Run ``task``, then write its record to ``metrics.json`` and print the result table.

    A failure is written too (status ``failed``, or ``diverged`` for a loss that blew up, with
    the error), so sweep summaries can list it. In a multirun it is logged and returned instead
    of raised, so the other jobs still run.
    """
    global _tasks_started
    _tasks_started = True
    run_dir = Path(cfg.paths.output_dir)
    prog = str(cfg.get("task_name", "run"))
    start = time.perf_counter()
    try:
        refuse_bad_config(prog, cfg)
        _one_console()
        with stop_on_signals():
            record = {"status": "ok", **task(cfg)}
    except ConfigError as err:  # in a multirun, or found while building (layers that do not fit)
        if not is_multirun():
            _refuse(prog, run_dir, err)
        record = {"status": "failed", "error": f"ConfigError: {err}"}
        log.error("Run refused: %s", err)
    except DataSourceError as err:  # the data is missing or corrupt: the user's to fix
        record = {"status": "failed", "error": f"DataSourceError: {err}"}
        log.error("Run failed: %s", err)
        if not is_multirun():
            _save(run_dir, record, start)
            fail(prog, err)
    except DivergedError as err:
        record = {"status": "diverged", "error": str(err)}
        log.error("Run stopped: %s", err)
        if not is_multirun():
            _save(run_dir, record, start)
            print(f"{prog}: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
    except Exception as err:
        record = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        log.error("Run failed: %s\n%s", record["error"], traceback.format_exc())
        if not is_multirun():
            _save(run_dir, record, start)
            raise
    except (KeyboardInterrupt, SystemExit):
        signum = stopped_by()
        if signum is None:
            raise
        _stop(prog, run_dir, start, signum)
    _save(run_dir, record, start)
    if is_rank_zero() and record["status"] == "ok":
        table = {k: record.get(k) for k in summary_keys} | {"run dir": str(run_dir)}
        print(format_table(f"{prog} result", table), flush=True)
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

    refuse_bad_config(prog, cfg)
    with user_errors(prog, CheckpointError, *errors):
        restored = restore(cfg.get("ckpt_path"), cfg.get("model"))
        extra = prepare(cfg, restored) if prepare else {}
    return run_task(partial(task, restored=restored, **extra), cfg, summary_keys)


def _stop(prog: str, run_dir: Path, start: float, signum: signal.Signals) -> NoReturn:
    """Record an interrupted run, say how to resume it, exit with 128 + the signal's number."""
    record: dict[str, Any] = {"status": "interrupted", "error": f"stopped by {signum.name}"}
    last = run_dir / "checkpoints" / "last.ckpt"
    message = f"{prog}: interrupted by {signum.name}"
    if last.is_file():  # goes on in this folder, exactly (cli.train.expand_resume)
        record["resume"] = shlex.join(["python", "train.py", f"resume={run_dir}"])
        message += f"; saved {last}\nResume with: {record['resume']}"
    _save(run_dir, record, start)
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


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
    record["provenance"] = provenance()
    if is_rank_zero():
        write_metrics(run_dir, record)
