"""Sweep summaries: one row per job of a Hydra multirun, as CSV, Markdown and a chart.

:class:`SweepSummary` is the Hydra callback (``conf/hydra/default.yaml``) that writes them at
the end of every multirun; ``python -m mnistapp.cli.summarize <sweep_dir>`` does the same later.
Everything is read back from the sweep directory (each job's ``.hydra/hydra.yaml`` and
``metrics.json``), so it works the same whichever launcher ran the jobs, in whichever process.

Only the standard library, PyYAML and Hydra are imported here: Hydra instantiates the callback
in every run, and ``--help`` must stay fast. matplotlib is imported when the chart is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnistapp.reporting.records import METRICS_FILE, format_value, read_metrics

log = logging.getLogger(__name__)

OPTUNA_RESULTS_FILE = "optimization_results.yaml"  # written by the Optuna sweeper
# Overrides that repeat a configuration rather than change it: rows differing only in these
# are grouped, and the summary gives their mean ± std.
REPLICATE_KEYS = ("seed", "repeat")
# (metrics.json key, Markdown header); the CSV uses the keys as headers.
METRIC_COLUMNS = (
    ("params_total", "params"),
    ("val/f1_best", "val F1 (best)"),
    ("test/acc", "test acc"),
    ("test/f1", "test F1"),
    ("epochs", "epochs"),
    ("wall_time_s", "wall s"),
)
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
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


@dataclass
class Summary:
    """A sweep's jobs, the override keys that vary between them, and its best job."""

    sweep_dir: Path
    jobs: list[Job]
    varying: list[str]
    fixed: dict[str, str] = field(default_factory=dict)
    best: Job | None = None
    best_note: str = ""

    @property
    def pruned(self) -> list[Job]:
        """Optuna trials stopped early as unpromising: by design, not failures."""
        return [job for job in self.jobs if job.record.get("status") == "pruned"]

    @property
    def failed(self) -> list[Job]:
        return [job for job in self.jobs if not job.ok and job not in self.pruned]

    def label(self, job: Job, keys: Sequence[str] | None = None, sep: str = " ") -> str:
        """``key=value`` for the varying overrides of ``job`` (floats shortened)."""
        keys = self.varying if keys is None else keys
        return sep.join(f"{k}={_short(job.overrides[k])}" for k in keys if k in job.overrides)


def _short(value: str) -> str:
    """``0.0012345678`` -> ``0.001235``: Optuna's floats are unreadable in a table."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or not math.isfinite(number) else f"{number:.4g}"


def _split(override: str) -> tuple[str, str]:
    """``+repeat=2`` -> ``("repeat", "2")``; Hydra keys never contain ``=``."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _read_job(job_dir: Path) -> Job | None:
    """The job in ``job_dir``, or None if Hydra ran it as a single run, not in a multirun."""
    hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    if hydra_cfg.get("mode") != "MULTIRUN":
        return None
    overrides = dict(_split(o) for o in hydra_cfg["overrides"]["task"])
    try:
        record = read_metrics(job_dir)
    except FileNotFoundError:
        # the job never finished: killed, out of memory, timed out on the cluster...
        record = {"status": "failed", "error": f"no {METRICS_FILE}: the job did not finish"}
    except json.JSONDecodeError as err:
        record = {"status": "failed", "error": f"unreadable {METRICS_FILE}: {err}"}
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
    """Read a sweep's jobs and find what varies and which job is best."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    values = {k: {job.overrides.get(k) for job in jobs} for k in keys}
    varying = [k for k in keys if len(values[k]) > 1]
    fixed = {k: jobs[0].overrides[k] for k in keys if k not in varying}
    summary = Summary(sweep_dir, jobs, varying, fixed)
    summary.best, summary.best_note = _best(summary)
    return summary


def _best(summary: Summary) -> tuple[Job | None, str]:
    """The Optuna sweeper's best trial when there is one, else the best ``val/f1_best``."""
    results = summary.sweep_dir / OPTUNA_RESULTS_FILE
    if results.is_file():
        optuna = yaml.safe_load(results.read_text()) or {}
        if "best_params" in optuna:
            # the sweeper passes each trial's params as `name=value` overrides
            params = {k: str(v) for k, v in optuna["best_params"].items()}
            match = [j for j in summary.jobs if params.items() <= j.overrides.items()]
            note = "Optuna best trial"
            if _finite(value := optuna.get("best_value")):
                note += f" (objective {value:.4g})"
            if not match:
                note += f" {optuna['best_params']}"
            return (match[0] if match else None), note
    scored = [j for j in summary.jobs if j.ok and _finite(j.record.get("val/f1_best"))]
    if not scored:
        return None, ""
    return max(scored, key=lambda j: j.record["val/f1_best"]), "Best val/f1_best"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def to_csv(summary: Summary) -> str:
    """One row per job: job, one column per varying override, the metrics, status, error."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job", *summary.varying, *(k for k, _ in METRIC_COLUMNS), "status", "error"])
    for job in summary.jobs:
        writer.writerow(
            [
                job.num,
                *(job.overrides.get(k, "") for k in summary.varying),
                *(job.record.get(k, "") for k, _ in METRIC_COLUMNS),
                job.record.get("status", "failed"),
                job.record.get("error", ""),
            ]
        )
    return out.getvalue()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


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


def to_markdown(summary: Summary) -> str:
    """The summary as Markdown: per-job table, seed groups, best job, failures."""
    lines = [f"# Sweep summary: {summary.sweep_dir}", ""]
    ok = len(summary.jobs) - len(summary.failed) - len(summary.pruned)
    pruned = f", {len(summary.pruned)} pruned" if summary.pruned else ""
    lines.append(f"{len(summary.jobs)} jobs: {ok} ok{pruned}, {len(summary.failed)} failed.")
    if summary.fixed:
        fixed = " ".join(f"{k}={v}" for k, v in summary.fixed.items())
        lines.append(f"Fixed overrides: `{fixed}`")
    lines.append("")
    headers = ["job", "overrides", *(h for _, h in METRIC_COLUMNS), "status"]
    rows = [
        [
            str(job.num),
            summary.label(job),
            *(format_value(job.record.get(k)) for k, _ in METRIC_COLUMNS),
            job.record.get("status", "failed"),
        ]
        for job in summary.jobs
    ]
    lines += _table(headers, rows)

    groups = replicate_groups(summary)
    if groups:
        lines += ["", "## Mean ± std over seeds", ""]
        averaged = [h for k, h in METRIC_COLUMNS if k in AVERAGED]
        headers = ["overrides", "ok runs", "params", *averaged]
        rows = []
        for label, jobs in groups.items():
            done = [job for job in jobs if job.ok]
            params = {job.record.get("params_total") for job in done}
            cells = []
            for key in AVERAGED:
                values = [job.record[key] for job in done if _finite(job.record.get(key))]
                mean, std = mean_std(values) if values else (math.nan, math.nan)
                cells.append(f"{mean:.4f} ± {std:.4f}" if values else "")
            shown = format_value(params.pop()) if len(params) == 1 else ""
            rows.append([label, f"{len(done)}/{len(jobs)}", shown, *cells])
        lines += _table(headers, rows)

    if summary.best_note:
        lines.append("")
        if summary.best is None:
            # a resumed study's best may be a trial of an earlier sweep
            lines.append(f"**{summary.best_note}**: a trial of an earlier sweep of the study.")
        else:
            best = summary.best
            scores = [f"val F1 {format_value(best.record.get('val/f1_best'))}"]
            if best.record.get("test/f1") is not None:  # a search does not test its trials
                scores.append(f"test F1 {format_value(best.record['test/f1'])}")
            lines.append(
                f"**{summary.best_note}: job {best.num}** (`{summary.label(best) or '-'}`): "
                f"{', '.join(scores)}, {best.path}"
            )
    if summary.failed:
        lines += ["", "## Failed jobs", ""]
        lines += [
            f"- job {job.num} (`{summary.label(job) or '-'}`): "
            f"{_one_line(job.record.get('error', 'unknown error'))}"
            for job in summary.failed
        ]
    return "\n".join(lines) + "\n"


def plot(summary: Summary, path: Path) -> None:
    """Test macro F1 against parameter count (log x), one labelled point per finished job; the
    best validation F1 when no job was tested (a hyper-parameter search)."""
    # The object-oriented API renders with Agg and leaves pyplot's global state alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.add_subplot()
    tested = any(_finite(j.record.get("test/f1")) for j in summary.jobs)
    key, name = ("test/f1", "test macro F1") if tested else ("val/f1_best", "best val macro F1")
    done = [
        j
        for j in summary.jobs
        if j.ok and _finite(j.record.get(key)) and j.record.get("params_total")
    ]
    for job in done:
        x, y = job.record["params_total"], job.record[key]
        ax.scatter(x, y, color="tab:blue", zorder=2)
        label = summary.label(job, sep="\n") or f"job {job.num}"
        note = ax.annotate(label, (x, y), xytext=(5, 3), textcoords="offset points", fontsize=7)
        note.set_in_layout(False)  # long labels must not shrink the axes
    if not done:
        ax.text(0.5, 0.5, "no finished jobs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    params = sorted({job.record["params_total"] for job in done})
    if 0 < len(params) <= 12:  # few sizes: tick each one with its exact count
        ax.set_xticks(params, [f"{p:,}" for p in params], rotation=30)
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.2, y=0.1)
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(name)
    ax.set_title(f"Parameters vs {name}: {summary.sweep_dir.parent.name}/{summary.sweep_dir.name}")
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)


def write_summary(sweep_dir: str | Path) -> Summary:
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` into ``sweep_dir``."""
    from mnistapp.files import atomic_write

    summary = summarize(sweep_dir)
    atomic_write(summary.sweep_dir / "summary.csv", to_csv(summary).encode())
    atomic_write(summary.sweep_dir / "summary.md", to_markdown(summary).encode())
    plot(summary, summary.sweep_dir / "summary.png")
    return summary


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when it ends; exit non-zero if a job failed.

    Jobs catch their own errors (``cli.task.run_task``) so that one failure does not stop the
    sweep; this is where the failure reaches the exit code. Hydra turns exceptions raised by
    callbacks into warnings, so it is a ``SystemExit``, raised after the summary is written.
    """

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summary = write_summary(sweep_dir)
        except NotASweepError as err:  # e.g. every job failed before Hydra created its dir
            log.warning("No sweep summary: %s", err)
            return
        print(to_markdown(summary), end="", flush=True)
        log.info("Sweep summary: %s (.csv, .png)", sweep_dir / "summary.md")
        if summary.failed and self.fail_on_error:
            raise SystemExit(
                f"{len(summary.failed)} of {len(summary.jobs)} jobs failed: "
                f"see {sweep_dir / 'summary.md'}"
            )
