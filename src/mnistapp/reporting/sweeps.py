"""Sweep summaries: one row per job of a Hydra multirun, as CSV, Markdown and a chart.

Written by the Hydra callback :class:`SweepSummary` (``conf/hydra/default.yaml``) when a multirun
ends or a signal stops it, or later by ``python -m mnistapp.cli.summarize``. All is read back from
the sweep folder (``multirun.yaml``, each job's ``.hydra/`` and ``metrics.json``), so any launcher
will do. Light imports: Hydra instantiates the callback in every run; matplotlib only to draw.
"""

from __future__ import annotations

import atexit
import csv
import io
import itertools
import json
import logging
import math
import shlex
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnistapp.files import atomic_write
from mnistapp.reporting.records import METRICS_FILE, format_value, markdown_table, read_metrics
from mnistapp.runtime import stopped_by

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

OPTUNA_RESULTS_FILE = "optimization_results.yaml"  # written by the Optuna sweeper
# Overrides that repeat a configuration rather than change it: rows differing only in these
# are grouped, and the summary gives their mean ± std.
REPLICATE_KEYS = ("seed", "repeat")
# metrics.json key: Markdown header; the CSV uses the keys as headers.
METRIC_COLUMNS = {
    "params_total": "params",
    "val/f1_best": "val F1 (best)",
    "test/acc": "test acc",
    "test/f1": "test F1",
    "epochs": "epochs",
    "wall_time_s": "wall s",
}
AVERAGED = ("val/f1_best", "test/acc", "test/f1")


class NotASweepError(ValueError):
    """The directory given is not one multirun's sweep directory."""


@dataclass
class Job:
    """One job of a sweep: its number, its overrides and its ``metrics.json`` record."""

    num: int
    overrides: dict[str, str]
    record: dict[str, Any]
    path: Path

    @property
    def status(self) -> str:
        """``ok``, ``pruned`` (by Optuna), ``interrupted`` (or never started) or ``failed``."""
        status = self.record.get("status")
        return status if status in ("ok", "pruned", "interrupted") else "failed"


@dataclass
class Summary:
    """A sweep's jobs, the override keys that vary between them, and its best job."""

    sweep_dir: Path
    jobs: list[Job]
    varying: list[str]
    fixed: dict[str, str]
    best: Job | None = None
    best_note: str = ""

    def having(self, status: str) -> list[Job]:
        return [job for job in self.jobs if job.status == status]

    def label(self, job: Job, keys: Sequence[str] | None = None, sep: str = " ") -> str:
        """``key=value`` for the varying overrides of ``job`` (floats shortened)."""
        keys = self.varying if keys is None else keys
        return sep.join(f"{k}={_short(job.overrides[k])}" for k in keys if k in job.overrides)


def _short(value: str) -> str:
    # 0.0012345678 -> 0.001235: Optuna's floats are unreadable in a table
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or not math.isfinite(number) else f"{number:.4g}"


def _overrides(task: Sequence[str]) -> dict[str, str]:
    """``["+repeat=2"]`` -> ``{"repeat": "2"}``; Hydra keys never contain ``=``."""
    pairs = (str(o).partition("=")[::2] for o in task)
    # ckpt_path is no choice: hydra/sweeper=resume adds it for an interrupted job's last.ckpt
    return {k.lstrip("+~"): v for k, v in pairs if k != "ckpt_path"}


def expand(arguments: Sequence[str]) -> list[list[str]]:
    """Each job's overrides, in job-number order, as Hydra's basic sweeper expands ``arguments``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
        for o in OverridesParser.create().parse_overrides(list(arguments))
    ]
    return [list(job) for job in itertools.product(*choices)]


def _launched(sweep_dir: Path) -> dict[str, Any] | None:
    """The config a basic sweep was launched with (its ``multirun.yaml``), None for another."""
    path = sweep_dir / "multirun.yaml"
    hydra = yaml.safe_load(path.read_text())["hydra"] if path.is_file() else {}
    return hydra if "BasicSweeper" in str(hydra.get("sweeper", {}).get("_target_")) else None


def _read_job(job_dir: Path) -> Job | None:
    """The job in ``job_dir``, or None if Hydra ran it as a single run, not in a multirun."""
    hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    if hydra_cfg.get("mode") != "MULTIRUN":
        return None
    try:
        record = read_metrics(job_dir)
    except FileNotFoundError:
        # the job never finished: killed, out of memory, timed out on the cluster...
        record = {"status": "failed", "error": f"no {METRICS_FILE}: the job did not finish"}
    except json.JSONDecodeError as err:
        record = {"status": "failed", "error": f"unreadable {METRICS_FILE}: {err}"}
    overrides = _overrides(hydra_cfg["overrides"]["task"])
    return Job(int(hydra_cfg["job"]["num"]), overrides, record, job_dir)


def collect_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every multirun job under ``sweep_dir``, found by the ``.hydra/`` folder of each job."""
    sweep_dir = Path(sweep_dir)
    hint = "pass a sweep directory (outputs/multirun/<date>/<time>)"
    if not sweep_dir.is_dir():
        raise NotASweepError(f"{sweep_dir} is not a directory")
    if (sweep_dir / ".hydra").is_dir():
        raise NotASweepError(f"{sweep_dir} is the directory of one run or job; {hint}")
    found = (_read_job(p.parent.parent) for p in sweep_dir.rglob(".hydra/hydra.yaml"))
    jobs = sorted((job for job in found if job is not None), key=lambda job: job.num)
    if not jobs:
        raise NotASweepError(f"{sweep_dir} holds no multirun jobs; {hint}")
    nums = [job.num for job in jobs]
    if len(set(nums)) != len(nums):
        raise NotASweepError(f"{sweep_dir} holds several sweeps (job numbers repeat); {hint}")
    return jobs


def summarize(sweep_dir: str | Path) -> Summary:
    """A sweep's jobs (planned ones never started as ``interrupted``), what varies, the best."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    if launched := _launched(sweep_dir):
        done = {job.num for job in jobs}
        jobs += [
            Job(num, _overrides(task), {"status": "interrupted", "error": "not started"},
                sweep_dir / str(num))
            for num, task in enumerate(expand(launched["overrides"]["task"]))
            if num not in done
        ]  # fmt: skip
        jobs.sort(key=lambda job: job.num)
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    varying = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]
    fixed = {k: jobs[0].overrides[k] for k in keys if k not in varying}
    summary = Summary(sweep_dir, jobs, varying, fixed)
    summary.best, summary.best_note = _best(summary)
    return summary


def resume_command(summary: Summary) -> str | None:
    """The command that reruns a basic sweep's interrupted jobs in their folders, if any."""
    launched = _launched(summary.sweep_dir)
    if not launched or not summary.having("interrupted"):
        return None
    # the mode and the folder are this command's own (the folder: the one summarised here)
    hydra = [
        o
        for o in launched["overrides"]["hydra"]
        if not o.startswith(("hydra.mode=", "hydra.sweep.dir="))
    ]
    return shlex.join(
        ["python", "train.py", "-m", *launched["overrides"]["task"], *hydra]
        + [f"hydra.sweep.dir={summary.sweep_dir}", "hydra/sweeper=resume"]
    )


def _best(summary: Summary) -> tuple[Job | None, str]:
    """The Optuna sweeper's best trial when there is one, else the best ``val/f1_best``."""
    results = summary.sweep_dir / OPTUNA_RESULTS_FILE
    optuna = yaml.safe_load(results.read_text()) or {} if results.is_file() else {}
    if "best_params" in optuna:
        # the sweeper passes each trial's params as `name=value` overrides
        params = {k: str(v) for k, v in optuna["best_params"].items()}
        match = [j for j in summary.jobs if params.items() <= j.overrides.items()]
        note = "Optuna best trial"
        if _finite(value := optuna.get("best_value")):
            note += f" (objective {value:.4g})"
        return (match[0], note) if match else (None, f"{note} {optuna['best_params']}")
    scored = [j for j in summary.jobs if j.status == "ok" and _finite(j.record.get("val/f1_best"))]
    if not scored:
        return None, ""
    return max(scored, key=lambda j: j.record["val/f1_best"]), "Best val/f1_best"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def to_csv(summary: Summary) -> str:
    """One row per job: job, one column per varying override, the metrics, status, error."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job", *summary.varying, *METRIC_COLUMNS, "status", "error"])
    for job in summary.jobs:
        cells = [job.overrides.get(k, "") for k in summary.varying]
        cells += [job.record.get(k, "") for k in METRIC_COLUMNS]
        end = [job.record.get("status", "failed"), job.record.get("error", "")]
        writer.writerow([job.num, *cells, *end])
    return out.getvalue()


def replicate_groups(summary: Summary) -> dict[str, list[Job]]:
    """Jobs grouped by their varying overrides other than seed/repeat; empty if none vary."""
    if not any(k in REPLICATE_KEYS for k in summary.varying):
        return {}
    keys = [k for k in summary.varying if k not in REPLICATE_KEYS]
    groups: dict[str, list[Job]] = {}
    for job in summary.jobs:
        groups.setdefault(summary.label(job, keys) or "(all)", []).append(job)
    return groups


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plus_minus(values: Sequence[float], percent: bool = False) -> str:
    """Mean ± sample std: ``0.9000 ± 0.0141``, or ``90.00% ± 1.41`` as a ``percent``."""
    mean, std = mean_std(values)
    return f"{100 * mean:.2f}% ± {100 * std:.2f}" if percent else f"{mean:.4f} ± {std:.4f}"


def _seed_rows(groups: dict[str, list[Job]]) -> Iterator[list[str]]:
    for label, jobs in groups.items():
        done = [job for job in jobs if job.status == "ok"]
        params = {job.record.get("params_total") for job in done}
        scores = [[j.record[k] for j in done if _finite(j.record.get(k))] for k in AVERAGED]
        shown = format_value(params.pop()) if len(params) == 1 else ""
        cells = [plus_minus(values) if values else "" for values in scores]
        yield [label, f"{len(done)}/{len(jobs)}", shown, *cells]


def to_markdown(summary: Summary) -> str:
    """The summary as Markdown: per-job table, seed groups, best job, failures, how to resume."""
    counts = {s: len(summary.having(s)) for s in ("ok", "pruned", "failed", "interrupted")}
    pruned = f", {counts['pruned']} pruned" if counts["pruned"] else ""
    stopped = f", {counts['interrupted']} interrupted" if counts["interrupted"] else ""
    lines = [
        f"# Sweep summary: {summary.sweep_dir}",
        "",
        f"{len(summary.jobs)} jobs: {counts['ok']} ok{pruned}, {counts['failed']} failed{stopped}.",
    ]
    if summary.fixed:
        lines.append(f"Fixed overrides: `{' '.join(f'{k}={v}' for k, v in summary.fixed.items())}`")
    lines.append("")
    rows = []
    for job in summary.jobs:
        metrics = [format_value(job.record.get(k)) for k in METRIC_COLUMNS]
        rows.append(
            [str(job.num), summary.label(job), *metrics, job.record.get("status", "failed")]
        )
    lines += markdown_table(["job", "overrides", *METRIC_COLUMNS.values(), "status"], rows)
    if groups := replicate_groups(summary):
        averaged = [METRIC_COLUMNS[k] for k in AVERAGED]
        lines += ["", "## Mean ± std over seeds", ""]
        lines += markdown_table(["overrides", "ok runs", "params", *averaged], _seed_rows(groups))
    if best := summary.best:
        scores = [f"val F1 {format_value(best.record.get('val/f1_best'))}"]
        if best.record.get("test/f1") is not None:  # a search does not test its trials
            scores.append(f"test F1 {format_value(best.record['test/f1'])}")
        lines += ["", f"**{summary.best_note}: job {best.num}** (`{summary.label(best) or '-'}`): "
                  f"{', '.join(scores)}, {best.path}"]  # fmt: skip
    elif summary.best_note:  # a resumed study's best may be a trial of an earlier sweep
        lines += ["", f"**{summary.best_note}**: a trial of an earlier sweep of the study."]
    if summary.having("failed"):
        lines += ["", "## Failed jobs", ""]
        for job in summary.having("failed"):
            error = " ".join(str(job.record.get("error", "unknown error")).split())
            label = summary.label(job) or "-"
            lines.append(f"- job {job.num} (`{label}`): {error.replace('|', '/')}")
    if command := resume_command(summary):
        lines += ["", f"Resume with: `{command}`"]
    return "\n".join(lines) + "\n"


def params_chart(ylabel: str, title: str) -> tuple[Figure, Axes]:
    """A figure of scores against parameter counts (log scale): summary.png and pareto.png."""
    # the object-oriented API renders with Agg and leaves pyplot's global state alone
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xscale="log", xlabel="parameters (log scale)", ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def plot(summary: Summary, path: Path) -> None:
    """Test macro F1 (best val F1 for a search, which tests nothing) against parameters, per job."""
    from matplotlib.ticker import NullFormatter

    tested = any(_finite(j.record.get("test/f1")) for j in summary.jobs)
    key, name = ("test/f1", "test macro F1") if tested else ("val/f1_best", "best val macro F1")
    where = f"{summary.sweep_dir.parent.name}/{summary.sweep_dir.name}"
    fig, ax = params_chart(name, f"Parameters vs {name}: {where}")
    done = [j for j in summary.jobs if j.status == "ok" and _finite(j.record.get(key))]
    done = [j for j in done if j.record.get("params_total")]
    for job in done:
        x, y = job.record["params_total"], job.record[key]
        ax.scatter(x, y, color="tab:blue", zorder=2)
        label = summary.label(job, sep="\n") or f"job {job.num}"
        note = ax.annotate(label, (x, y), xytext=(5, 3), textcoords="offset points", fontsize=7)
        note.set_in_layout(False)  # long labels must not shrink the axes
    if not done:
        ax.text(0.5, 0.5, "no finished jobs", ha="center", va="center", transform=ax.transAxes)
    params = sorted({job.record["params_total"] for job in done})
    if 0 < len(params) <= 12:  # few sizes: tick each one with its exact count
        ax.set_xticks(params, [f"{p:,}" for p in params], rotation=30)
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.2, y=0.1)
    fig.savefig(path, dpi=120)


def write_summary(sweep_dir: str | Path) -> Summary:
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` into ``sweep_dir``."""
    summary = summarize(sweep_dir)
    atomic_write(summary.sweep_dir / "summary.csv", to_csv(summary).encode())
    atomic_write(summary.sweep_dir / "summary.md", to_markdown(summary).encode())
    plot(summary, summary.sweep_dir / "summary.png")
    return summary


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when it ends; exit non-zero if a job failed.

    Jobs catch their own errors (``run_task``) so that one does not stop the sweep; the failure
    reaches the exit code here, as a ``SystemExit`` (Hydra turns callbacks' errors into warnings).
    """

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A job stopped by a signal exits the process (run_task: 128 + the signal), and Hydra
        # skips on_multirun_end: summarise at exit then (test_a_sigterm_stopped_sweep_resumes).
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self._on_signal)

    def _on_signal(self) -> None:
        if stopped_by() is not None:
            self._summarize(self.sweep_dir)

    def _summarize(self, sweep_dir: Path) -> Summary | None:
        try:
            summary = write_summary(sweep_dir)
        except NotASweepError as err:  # e.g. every job failed before Hydra created its dir
            log.warning("No sweep summary: %s", err)
            return None
        print(to_markdown(summary), end="", flush=True)
        log.info("Sweep summary: %s (.csv, .png)", sweep_dir / "summary.md")
        return summary

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._on_signal)
        summary = self._summarize(Path(str(config.hydra.sweep.dir)))
        if summary and summary.having("failed") and self.fail_on_error:
            raise SystemExit(
                f"{len(summary.having('failed'))} of {len(summary.jobs)} jobs failed: "
                f"see {summary.sweep_dir / 'summary.md'}"
            )
