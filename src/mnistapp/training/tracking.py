"""Weights & Biases that never blocks training: a guarded WandbLogger factory and a media callback.

``conf/logger/wandb.yaml`` builds the logger through :func:`wandb_logger`, which starts the run
itself (instead of letting Lightning do it lazily mid-training) so that any W&B failure becomes a
warning and ``None``: training goes on with the other loggers. See ``docs/WANDB.md``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from mnistapp.runtime import is_multirun, is_rank_zero
from mnistapp.training.callbacks import MisclassifiedDigits, find_callback

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

log = logging.getLogger(__name__)

OFFLINE_MODES = ("offline", "dryrun")

# Runs started by wandb_logger() in this process and not yet finished (see finish_runs).
_active_runs: list[Run] = []


def logged_in() -> bool:
    """True if wandb finds credentials for the server it would use, as ``wandb.init`` looks them
    up: an API key or identity token in the environment, its settings files, or the netrc entry
    for that server's host (``wandb login``; the default server is wandb's own choice).

    Never prompts, never touches the network, and changes nothing in wandb's session.
    """
    try:
        import wandb
        from wandb.sdk.lib import wbauth

        settings = wandb.Settings()
        settings.update_from_system_settings()  # `wandb login --host` saves the server there
        settings.update_from_env_vars(dict(os.environ))
        auth = wbauth.authenticate_session(
            host=settings.base_url, source="mnistapp", prompt=False, update_session=False
        )
    except ImportError:  # a wandb before 0.31: its public call, which may cache the key
        import wandb

        return bool(wandb.login(prompt=False, verify=False))
    except Exception as err:  # e.g. a malformed key: W&B would fail to log in as well
        log.warning("W&B: credentials found but unusable: %s", err)
        return False
    return auth is not None


def resolve_mode(configured: str | None = None) -> str:
    """The W&B mode for this run: ``WANDB_MODE`` if set, else ``configured``, else automatic.

    Automatic is ``online`` when :func:`logged_in`, else ``offline`` (upload later with
    ``wandb sync``), so W&B never asks for a key interactively.
    """
    mode = os.environ.get("WANDB_MODE") or configured
    if mode:
        return mode
    return "online" if logged_in() else "offline"


def sweep_group_and_name() -> tuple[str | None, str | None]:
    """In a Hydra multirun: a group shared by the sweep's jobs and this job's overrides as name."""
    if not is_multirun():
        return None, None
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    group = "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])  # e.g. 2024-05-01_12-00-00
    return group, hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"


def wandb_logger(
    project: str = "mnistapp",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    notes: str | None = None,
    save_dir: str = ".",
    mode: str | None = None,
    log_model: bool | str = False,
    init_timeout: float = 30.0,
    finish_timeout: float = 60.0,
) -> WandbLogger | None:
    """Start a W&B run and wrap it in Lightning's WandbLogger; ``None`` if W&B is unavailable.

    Only rank 0 logs under DDP (other ranks get ``None``). A run that cannot go online falls back
    to offline; if even that fails, the failure is logged as a warning and training goes on.
    """
    if not is_rank_zero():
        return None
    mode = resolve_mode(mode)
    if mode == "disabled":
        log.info("W&B is disabled (mode=disabled)")
        return None
    if mode not in OFFLINE_MODES and not logged_in():
        # wandb.init would ask for an API key interactively: never block training on a prompt.
        log.warning("W&B: mode=%s but not logged in (run `wandb login`); logging offline", mode)
        mode = "offline"
    sweep_group, sweep_name = sweep_group_and_name()
    init_args = {
        "project": project,
        "entity": entity,
        "group": group or sweep_group,
        "name": name or sweep_name,
        "tags": list(tags or ()),
        "notes": notes,
        "dir": save_dir,
    }
    previous = previous_run_id(save_dir)
    if previous:  # `resume=` continues this run folder: continue its W&B run too
        init_args |= {"id": previous, "resume": "allow"}
        log.info("W&B: continuing run %s of this folder", previous)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = _start_run(mode, init_args, init_timeout, finish_timeout)
    if run is None and mode not in OFFLINE_MODES:
        log.warning("W&B: could not go online; logging offline instead")
        run = _start_run("offline", init_args, init_timeout, finish_timeout)
    if run is None:
        log.warning("W&B logging is off for this run; the other loggers still record the metrics")
        return None
    _active_runs.append(run)
    run.summary["output_dir"] = str(Path(save_dir).resolve())
    # Lightning defines the same x-axis when it starts a run itself.
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    if run.offline:
        log.info("W&B run is offline; upload it later with: wandb sync %s", Path(run.dir).parent)
    return GuardedWandbLogger(
        experiment=run, project=project, save_dir=save_dir, log_model=log_model
    )


def previous_run_id(save_dir: str | Path) -> str | None:
    """The id of the W&B run an earlier start of this run folder logged to, if there was one.

    W&B keeps each run in ``<save_dir>/wandb/<offline-run|run>-<date>_<time>-<id>``.
    """
    runs = sorted(Path(save_dir, "wandb").glob("*run-*_*-*"), key=lambda p: p.name.split("-")[-2])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of the logger, made to warn once and stop logging to W&B if it fails."""

    @functools.wraps(method)
    def call(self: GuardedWandbLogger, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # a W&B failure must not stop training
            self.failed = True
            log.warning(
                "W&B: %s failed (%s: %s); W&B logging is off for the rest of this run, training "
                "and the other loggers go on",
                method.__name__,
                type(err).__name__,
                err,
            )
            return None

    return call


class GuardedWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose every call is guarded: a W&B failure mid-run is one warning."""

    failed = False
    log_hyperparams = _guarded(WandbLogger.log_hyperparams)
    log_metrics = _guarded(WandbLogger.log_metrics)
    log_image = _guarded(WandbLogger.log_image)
    log_table = _guarded(WandbLogger.log_table)
    after_save_checkpoint = _guarded(WandbLogger.after_save_checkpoint)
    finalize = _guarded(WandbLogger.finalize)


def _start_run(
    mode: str, init_args: dict[str, Any], init_timeout: float, finish_timeout: float
) -> Run | None:
    """``wandb.init`` that returns ``None`` (with a warning) instead of raising."""
    try:
        import wandb

        # The process-wide settings follow the run's mode, so an offline run stays off the
        # network entirely (wandb's own telemetry reads the global settings, not the run's).
        wandb.setup(settings=wandb.Settings(mode=mode))
        return wandb.init(
            **init_args,
            mode=mode,
            # A run left over from an earlier job in this process must not be reused.
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=init_timeout, finish_timeout=finish_timeout),
        )
    except Exception as err:  # any W&B failure must not stop training
        reason = (str(err).splitlines() or [""])[0]  # wandb appends advice for its own API
        log.warning("W&B: could not start the run (mode=%s): %s", mode, reason or repr(err))
        return None


def finish_runs(exit_code: int = 0) -> None:
    """Finish the W&B runs this process started (call at the end of every job).

    Hydra runs multirun jobs one after another in the same process: without this, the next job
    would log into the previous job's run.
    """
    while _active_runs:
        run = _active_runs.pop()
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:
            log.warning("W&B: could not finish run %s: %s", run.id, err)


class WandbMedia(L.Callback):
    """After testing, log W&B's own charts: an interactive confusion matrix, per-class F1 as a
    table and a bar chart, and the misclassified test images, each captioned with its true and
    predicted class.

    Does nothing unless a :class:`WandbLogger` is attached; a failure is only a warning. Class
    names are the Classifier's (from the data config, kept in its checkpoint); the images from
    the trainer's :class:`MisclassifiedDigits` callback, when it has one.
    """

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        collector = find_callback(trainer, MisclassifiedDigits)
        failures = collector.failures if collector is not None else {}
        results = pl_module.test_results
        names = getattr(pl_module, "class_names", None) or [
            str(k) for k in range(len(results.get("test/confusion", [])))
        ]
        try:
            media = self.media(results, failures, [str(n) for n in names])
            for logger in loggers:
                logger.log_metrics(media, step=trainer.global_step)
        except Exception as err:
            log.warning("W&B: could not log the test media: %s: %s", type(err).__name__, err)

    @staticmethod
    def media(
        results: dict[str, Any], failures: dict[str, Any], names: Sequence[str]
    ) -> dict[str, Any]:
        """The W&B objects to log, by key, from a test's results and misclassified images."""
        import wandb

        media: dict[str, Any] = {}
        confusion = results.get("test/confusion")
        if confusion:
            # wandb's chart counts (true, predicted) pairs: expand the matrix back into them
            pairs = [(t, p) for t, row in enumerate(confusion) for p, n in enumerate(row)]
            counts = [int(n) for row in confusion for n in row]
            y_true = [t for (t, _), n in zip(pairs, counts, strict=True) for _ in range(n)]
            preds = [p for (_, p), n in zip(pairs, counts, strict=True) for _ in range(n)]
            media["test/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=y_true, preds=preds, class_names=list(names), title="Test confusion matrix"
            )
        f1 = results.get("test/f1_per_class")
        if f1:
            table = wandb.Table(
                columns=["class", "f1"], data=[[n, v] for n, v in zip(names, f1, strict=True)]
            )
            media["test/f1_per_class"] = table
            media["test/f1_per_class_chart"] = wandb.plot.bar(
                table, "class", "f1", title="Test macro F1 per class"
            )
        if failures:
            media["test/misclassified"] = [
                wandb.Image(
                    _to_uint8(image),
                    caption=f"true {names[int(t)]}, predicted {names[int(p)]}",
                )
                for image, t, p in zip(
                    failures["images"], failures["targets"], failures["preds"], strict=True
                )
            ]
        return media


def _to_uint8(image: Any) -> Any:
    """A normalised image as uint8 greyscale, stretched to its own range (for display)."""
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) if high > low else image * 0
    return (scaled * 255).round().byte().numpy()
