"""What every entry point shares: run a task into ``metrics.json``, and one-line user errors."""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnistapp.cli.schema import check, is_resume
from mnistapp.errors import REFUSALS, ConfigError, InputError, fail, outcome
from mnistapp.reporting.records import format_table, write_metrics
from mnistapp.runtime import (
    is_multirun,
    is_rank_zero,
    provenance,
    register_resolvers,
    stop_on_signals,
    stopped_by,
)

log = logging.getLogger(__name__)

# how far a record got: a resume replaces the run's record only by one at least as far
PROGRESS = {"failed": 0, "diverged": 1, "interrupted": 2, "pruned": 3, "ok": 3}


def entry_point(prog: str, hydra_main: Callable[[], Any]) -> Callable[[], Any]:
    """``hydra_main`` (a ``@hydra.main`` function) with Hydra's own errors as one line, exit 2;
    ``HYDRA_FULL_ERROR=1`` shows everything, for developers."""

    @functools.wraps(hydra_main)
    def main() -> Any:
        from hydra.errors import ConfigCompositionException, OverrideParseException

        register_resolvers()
        # submitit warns thrice a poll where the cluster keeps no accounting (sacct fails, as on
        # scripts/slurm-local.sh's); its job errors still show
        os.environ.setdefault("SUBMITIT_LOG_LEVEL", "ERROR")
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return hydra_main()
        # Without it Hydra prints a screen of each error and exits 1; with it they reach us.
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return hydra_main()
        except (ConfigCompositionException, OverrideParseException) as err:
            fail(prog, hydra_error_message(err))
        except ConfigError as err:
            fail(prog, err)
        except ValueError as err:  # Hydra's override parser reads a 5,000-digit number
            if "integer string conversion" not in str(err):
                raise
            fail(prog, f"a number on the command line is too long: {str(err).split(';')[0]}")

    return main


def hydra_error_message(err: Exception) -> str:
    """One line for a Hydra composition error, listing what would have been valid."""
    from hydra.errors import MissingConfigException

    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = str(err.missing_cfg_file).rpartition("/")
        hint = _did_you_mean(name, err.options)
        return f"{group}={name} is not an option{hint}; {group} is one of: {', '.join(err.options)}"
    cause = err.__cause__
    parent, key = getattr(cause, "parent_node", None), getattr(cause, "key", None)
    if key is not None and parent is not None and "not in struct" in str(cause):
        full_key = str(getattr(cause, "full_key", key))
        known = [str(k) for k in parent if not str(k).startswith("_")]
        return (
            f"{full_key} is not a setting{_did_you_mean(str(key), known)}; its neighbours are: "
            f"{', '.join(known)} (to add a new key, write +{full_key}=...)"
        )
    lines = [line.strip().rstrip(".") for line in str(err).splitlines() if line.strip()]
    # what failed and the parser's reason, not the docs link that follows
    return ": ".join(lines[:2])[:500]


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def run_task(
    task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig, summary_keys: tuple[str, ...]
) -> dict[str, Any]:
    """Run ``task``, write its record to ``metrics.json`` (a failure too, by ``errors.OUTCOMES``;
    a refused new run removes its folder instead) and print the result table. In a multirun a
    failure is returned, not raised, so the other jobs still run."""
    run_dir = Path(cfg.paths.output_dir)
    prog = str(cfg.get("task_name", "run"))
    resume = is_resume(run_dir, cfg.get("ckpt_path"))
    start = time.perf_counter()
    record: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if resume:
        record["resumed_from"] = str(cfg.ckpt_path)
    try:
        if is_multirun():  # a single run was checked before its folder existed (schema.Preflight)
            check(cfg)
        _quiet_lightning()
        with stop_on_signals():
            record |= {"status": "ok", **task(cfg)}
    except (KeyboardInterrupt, SystemExit):
        signum = stopped_by()
        if signum is None:
            raise
        record |= {"status": "interrupted", "error": f"stopped by {signum.name}"}
        message = f"{prog}: interrupted by {signum.name}"
        last = run_dir / "checkpoints" / "last.ckpt"
        # a sweep's job is resumed by the sweep's own command (reporting.sweeps.SweepSummary)
        if last.is_file() and not is_multirun():
            record["resume"] = shlex.join(["python", "train.py", f"resume={run_dir}"])
            message += f"; saved {last}\nResume with: {record['resume']}"
        _save(run_dir, record, start)
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
    except Exception as err:
        known = outcome(err)
        status, code = known or ("failed", 1)
        error = str(err) if status == "diverged" else f"{type(err).__name__}: {err}"
        record |= {"status": status, "error": error}
        log.error("Run %s: %s", status, error, exc_info=known is None)
        if is_multirun():
            _save(run_dir, record, start)
            return record
        refused = isinstance(err, REFUSALS) and not resume
        if not (refused and _remove_run_folder(run_dir, Path(cfg.paths.log_dir).absolute())):
            _save(run_dir, record, start)
        if known is None:
            raise
        if is_rank_zero():  # one line, not one per DDP rank
            print(f"{prog}: {'error: ' if code == 2 else ''}{err}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None
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
    prepare: Callable[[DictConfig, Any], dict[str, Any]] | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> dict[str, Any]:
    """``run_task`` of ``task(cfg, restored=..., **prepare(cfg, restored))``, where ``restored``
    is ``cfg.ckpt_path`` (``model=`` asserts the architecture); ``errors`` of ``prepare`` (the
    user's inputs) are one-line refusals."""

    def restore_then_run(cfg: DictConfig) -> dict[str, Any]:
        from mnistapp.training.checkpoints import restore

        restored = restore(cfg.get("ckpt_path"), cfg.get("model"))
        try:
            extra = prepare(cfg, restored) if prepare else {}
        except errors as err:
            raise InputError(str(err)) from None
        return task(cfg, restored=restored, **extra)

    return run_task(restore_then_run, cfg, summary_keys)


def _remove_run_folder(run_dir: Path, log_dir: Path) -> bool:
    """Remove what Hydra wrote into a refused new run's folder, and the folders made for it up
    to ``log_dir`` (nothing else); False when something else is there."""
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).unlink(missing_ok=True)
    for log_file in run_dir.glob("*.log"):
        log_file.unlink()
    folders = [run_dir / ".hydra", run_dir, *run_dir.parents]
    for folder in folders[: folders.index(log_dir) if log_dir in folders else 3]:
        try:
            folder.rmdir()  # only when empty: anything else there is not ours to delete
        except FileNotFoundError:
            continue
        except OSError:
            return folder not in (run_dir, run_dir / ".hydra")
    return True


# Lightning's messages that say nothing about our runs, matched by their exact start: the one
# place they are silenced (tests/test_template_configs.py: a default run prints none of them)
HARMLESS_WARNINGS = (
    "`isinstance(treespec, LeafSpec)` is deprecated",  # Lightning 2.6's own call on torch 2.14
    # OnExceptionCheckpoint makes fit(ckpt_path=None) look for a last.ckpt; a new run has none
    "`.fit(ckpt_path=None)` was called without a model",
    '.fit(ckpt_path="last") is set, but there is no last checkpoint',
    "Precision bf16-mixed is not supported by the model summary",
    # where SLURM is installed: submitit starts our cluster jobs itself, and a local run is local
    "The `srun` command is available on your system but is not used",
)
HARMLESS_LOGS = ("\N{ELECTRIC LIGHT BULB} Tip:",)  # Lightning's advert for its cloud logger


def _quiet_lightning() -> None:
    """Print Lightning's messages once and without the harmless ones above."""
    import re
    import warnings

    import lightning  # noqa: F401  (the import adds the handler we remove)

    # the `lightning` logger's own console handler doubled every line that Hydra's root shows
    logging.getLogger("lightning").handlers.clear()
    for start in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start))
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not logger.filters:
        logger.addFilter(lambda record: not str(record.msg).startswith(HARMLESS_LOGS))


def _save(run_dir: Path, record: dict[str, Any], start: float) -> None:
    """Write ``record``; into a run that has one already (a resume), only when it got at least as
    far and has every figure of the earlier one, else keep that and note this try in ``resumes``."""
    record |= {"wall_time_s": round(time.perf_counter() - start, 2), "run_dir": str(run_dir)}
    record["provenance"] = provenance()
    if not is_rank_zero():
        return
    try:
        earlier = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        earlier = None
    if isinstance(earlier, dict) and "status" in earlier:
        figures = {k for k, v in earlier.items() if "/" in k and v is not None}
        this_try = {k: record.get(k) for k in ("started", "status", "error", "resumed_from")}
        resumes = [*earlier.get("resumes", []), this_try]
        further = PROGRESS.get(record["status"], 0) >= PROGRESS.get(earlier["status"], 0)
        started = earlier.get("started", record["started"])
        if not (further and figures <= record.keys()):
            record = earlier
        record |= {"started": started, "resumes": resumes}
    write_metrics(run_dir, record)
