"""Published claims against our runs: ``docs/REPRODUCTION.md`` and ``docs/pareto.png``.

The claims live in one file, ``claims.yaml`` beside this module (its header says what a point
holds); the experiment configs hold only the recipes. Runs are multiruns over seeds
(``mnistapp-reproduce``); :func:`harvest` keeps each sweep's figures in
``docs/reproduction/<experiment>.json`` (committed), and the report is built from those: it can
be rebuilt at any time, from runs made on any machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mnistapp.reporting.sweeps import NotASweepError, collect_jobs, mean_std

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXPERIMENTS = files("mnistapp.conf").joinpath("experiment")
# every published figure, in report order; run configs carry none
CLAIMS = files("mnistapp.reporting").joinpath("claims.yaml")
# below this many percentage points, or twice the seeds' std, a difference is noise
NOISE_PP = 0.2
# seeds whose macro F1 spread beyond this are drawn one by one in docs/pareto.png
WILD_STD = 0.02


@dataclass
class Point:
    """One published figure and, once measured, ours over seeds."""

    experiment: str
    study: str
    metric: str
    label: str
    when: dict[str, str] = field(default_factory=dict)
    published: float | tuple[float, float] | None = None
    published_params: int | None = None
    target: float | None = None
    reference: str | None = None
    # the public reference as (parameters, value), for the figure
    reference_point: tuple[int, float] | None = None
    reason: str | None = None
    values: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    params: int | None = None
    epochs: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    failed: int = 0

    @property
    def measured(self) -> bool:
        return bool(self.values)

    def difference_pp(self) -> float | None:
        """Ours minus published, in percentage points (0 inside a published range)."""
        if not self.measured or self.published is None:
            return None
        mean = mean_std(self.values)[0]
        if isinstance(self.published, tuple):
            low, high = self.published
            gap = 0.0 if low <= mean <= high else (mean - low if mean < low else mean - high)
        else:
            gap = mean - self.published
        return 100 * gap

    def met(self) -> bool | None:
        """Whether the seeds' mean reaches the pareto ``target``; None before any run."""
        if self.target is None or not self.measured:
            return None
        return mean_std(self.values)[0] >= self.target

    def beyond_noise(self) -> bool:
        diff = self.difference_pp()
        if diff is None:
            return False
        std = mean_std(self.values)[1] if len(self.values) > 1 else 0.0
        return abs(diff) > max(NOISE_PP, 200 * std)


def load_claims(names: Sequence[str] | None = None) -> list[Point]:
    """The points of :data:`CLAIMS` in report order (of the experiments ``names`` only)."""
    points = []
    for study in yaml.safe_load(CLAIMS.read_text()):
        for raw in study["points"]:
            if names is not None and raw["experiment"] not in names:
                continue
            published = raw.get("published")
            reference = raw.get("reference_point")
            points.append(
                Point(
                    experiment=raw["experiment"],
                    study=study["study"],
                    metric=raw.get("metric", study.get("metric")),
                    label=str(raw["label"]),
                    when={k: str(v) for k, v in (raw.get("when") or {}).items()},
                    published=tuple(published) if isinstance(published, list) else published,
                    published_params=raw.get("published_params"),
                    target=raw.get("target"),
                    reference=raw.get("reference"),
                    reference_point=tuple(reference) if reference else None,
                    reason=raw.get("reason"),
                )
            )
    return points


def claimed_experiments() -> list[str]:
    """Names of the experiments with a claim, in report order."""
    return list(dict.fromkeys(p.experiment for p in load_claims()))


def _same(a: str, b: str) -> bool:
    """Override values as equal: ``5e-4`` and ``0.0005`` are one learning rate."""
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b))
    except ValueError:
        return False


def latest_sweep(root: Path, experiment: str) -> Path | None:
    """The newest sweep directory of ``experiment`` under ``root``, if any."""
    runs = sorted(p for p in (root / experiment).glob("*") if p.is_dir())
    return runs[-1] if runs else None


# what the results file keeps of each job's metrics.json
KEPT = (
    "status",
    "error",
    "test/acc",
    "test/f1",
    "val/f1_best",
    "train/acc",
    "params_total",
    "epochs",
    "wall_time_s",
    "device",
    "precision",
)


def harvest(root: Path, store: Path) -> list[Path]:
    """Copy each experiment's newest sweep under ``root`` (and ``root/<data>/``) into
    ``store/[<data>/]<experiment>.json``: its jobs' overrides and figures, small enough to commit,
    so the report can be rebuilt without the run folders."""
    written = []
    for base in [root, *(p for p in root.glob("*") if (p / ".data").is_file())]:
        target = store if base == root else store / base.name
        for exp_dir in sorted(p for p in base.iterdir() if p.is_dir() and p != base):
            sweep = latest_sweep(base, exp_dir.name)
            if sweep is None or (exp_dir / ".data").exists():
                continue
            try:
                jobs = collect_jobs(sweep)
            except NotASweepError:
                continue
            rows = [
                {"overrides": job.overrides, **{k: job.record[k] for k in KEPT if k in job.record}}
                for job in jobs
            ]
            target.mkdir(parents=True, exist_ok=True)
            path = target / f"{exp_dir.name}.json"
            path.write_text(json.dumps({"sweep": str(sweep), "jobs": rows}, indent=1) + "\n")
            written.append(path)
    return written


def _jobs(store: Path, experiment: str) -> list[dict[str, Any]]:
    path = store / f"{experiment}.json"
    return json.loads(path.read_text())["jobs"] if path.is_file() else []


def fill(points: Sequence[Point], store: Path) -> None:
    """Attach to each point its jobs' results from ``store/<experiment>.json``."""
    for point in points:
        for job in _jobs(store, point.experiment):
            overrides = job["overrides"]
            if not all(_same(overrides.get(k, ""), v) for k, v in point.when.items()):
                continue
            value = job.get(point.metric)
            if job.get("status") != "ok" or not isinstance(value, int | float):
                point.failed += 1
                continue
            point.values.append(float(value))
            point.f1.append(float(job.get("test/f1", value)))
            point.params = job.get("params_total")
            point.epochs.append(int(job.get("epochs", 0)))
            point.wall_s.append(float(job.get("wall_time_s", 0.0)))
            if job.get("device"):
                # mixed precision is part of where a figure came from; full float32 goes unsaid
                precision = job.get("precision", "32-true")
                suffix = "" if precision in ("32-true", "32") else f", {precision}"
                point.devices.add(f"{job['device']}{suffix}")


def other_data(store: Path) -> dict[str, list[Point]]:
    """Experiments run on another data set (``store/<data>/<experiment>.json``), by data set:
    one point each, test accuracy over seeds (macro F1 in ``f1``)."""
    found: dict[str, list[Point]] = {}
    for data_dir in sorted(p for p in store.glob("*") if p.is_dir()):
        points = []
        for path in sorted(data_dir.glob("*.json")):
            point = Point(path.stem, data_dir.name, "test/acc", path.stem)
            fill([point], data_dir)
            if point.measured or point.failed:
                points.append(point)
        found[data_dir.name] = points
    return found


def _pct(value: float | tuple[float, float] | None, metric: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        return "–".join(_pct(v, metric) for v in value)
    return f"{100 * value:.2f}%" if metric == "test/acc" else f"{value:.4f}"


def _ours(point: Point) -> str:
    if not point.measured:
        return "not measured yet"
    mean, std = mean_std(point.values)
    scale, unit = (100, "%") if point.metric == "test/acc" else (1, "")
    digits = 2 if point.metric == "test/acc" else 4
    text = f"{scale * mean:.{digits}f}{unit} ± {scale * std:.{digits}f} (n={len(point.values)})"
    return text + (f", {point.failed} failed" if point.failed else "")


def _runs(point: Point) -> tuple[str, str, str]:
    if not point.measured:
        return "", "", ""
    epochs = sorted(set(point.epochs))
    shown = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
    wall = f"{mean_std(point.wall_s)[0]:.0f}"
    return shown, wall, ", ".join(sorted(point.devices)) or "?"


def render(
    points: Sequence[Point], command: str, others: Mapping[str, Sequence[Point]] | None = None
) -> str:
    """``docs/REPRODUCTION.md``: one table per study, the pareto table, other data sets."""
    metric_name = {"test/acc": "test accuracy", "test/f1": "test macro F1"}
    lines = [
        "# Reproducing the published claims",
        "",
        "Every claim of the five write-ups our users arrive from (`../shared/studies/`) is a",
        "point in `src/mnistapp/reporting/claims.yaml`, run by an `experiment=` config",
        "(`conf/experiment/`, the recipe as the write-up states it). Ours are means ± sample std",
        "over seeds, each run's",
        "checkpoint chosen on validation macro F1 and then tested once on the 10k test set. Unless",
        "an experiment says otherwise, validation is 5,000 of the 60k training images (the LeNet",
        "study held none out). A difference beyond twice the seeds' std is more than noise; one",
        f"beyond {NOISE_PP} points gets a reason where we have one. Every run's figures are in",
        '`docs/reproduction/<experiment>.json`. "ran on" names the machine and any mixed',
        'precision (`-- trainer.precision=bf16-mixed`); "wall s/run" is fitting and testing',
        "(two reproductions may have shared the machine, one thread each). Run and rebuilt by:",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    studies = list(dict.fromkeys(p.study for p in points if p.target is None))
    for study in studies:
        rows = [p for p in points if p.study == study and p.target is None]
        metric = metric_name[rows[0].metric]
        lines += [f"## {study} ({metric})", ""]
        lines.append(
            "| experiment | claim | published | ours | difference | params | epochs "
            "| wall s/run | ran on | why we differ |"
        )
        lines.append("|---|---|--:|--:|--:|--:|--:|--:|---|---|")
        for p in rows:
            diff = p.difference_pp()
            diff_text = "" if diff is None else f"{diff:+.2f} pp"
            epochs, wall, where = _runs(p)
            # not beyond_noise(): a seed that failed to learn makes the std huge, and its reason
            # must still show
            why = (p.reason or "") if diff is not None and abs(diff) > NOISE_PP else ""
            params = f"{p.params:,}" if p.params else ""
            lines.append(
                f"| `{p.experiment}` | {p.label} | {_pct(p.published, p.metric)} | {_ours(p)} "
                f"| {diff_text} | {params} | {epochs} | {wall} | {where} | {why} |"
            )
        lines.append("")
    pareto = [p for p in points if p.target is not None]
    if pareto:
        lines += [
            "## Beating each published point at its own parameter budget",
            "",
            "| experiment | budget | target | public reference | ours | met | params | epochs "
            "| wall s/run | ran on |",
            "|---|--:|--:|---|--:|---|--:|--:|--:|---|",
        ]
        for p in pareto:
            met = "" if p.met() is None else "yes" if p.met() else "**no**"
            epochs, wall, where = _runs(p)
            params = f"{p.params:,}" if p.params else ""
            budget = f"{p.published_params:,}" if p.published_params else ""
            lines.append(
                f"| `{p.experiment}` | {budget} | {_pct(p.target, p.metric)} | "
                f"{p.reference or ''} | {_ours(p)} | {met} | {params} | {epochs} | {wall} "
                f"| {where} |"
            )
        missed = [p for p in pareto if p.reason and p.met() is False]
        if missed:
            lines += ["", "Where a target is missed:", ""]
            lines += [f"- `{p.experiment}`: {p.reason}" for p in missed]
        lines += ["", "![parameters vs test macro F1](pareto.png)", ""]
    for data, rows in (others or {}).items():
        lines += [
            f"## The same experiments on `data={data}`",
            "",
            "| experiment | test accuracy | test macro F1 | params | epochs | wall s/run "
            "| ran on |",
            "|---|--:|--:|--:|--:|--:|---|",
        ]
        for p in rows:
            f1 = ""
            if p.f1:
                mean, std = mean_std(p.f1)
                f1 = f"{mean:.4f} ± {std:.4f}"
            epochs, wall, where = _runs(p)
            params = f"{p.params:,}" if p.params else ""
            lines.append(
                f"| `{p.experiment}` | {_ours(p)} | {f1} | {params} | {epochs} | {wall} | {where} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(points: Sequence[Point], path: Path) -> Figure:
    """Parameters (log) vs test macro F1 for the claims about a parameter budget: the published
    points, the public references the pareto models aim past, and ours (mean ± std)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.add_subplot()
    sized = [p for p in points if p.published_params]
    published = [p for p in sized if isinstance(p.published, float | int)]
    for metric, marker in (("test/f1", "o"), ("test/acc", "s")):
        shown = [p for p in published if p.metric == metric]
        if shown:
            ax.scatter(
                [p.published_params for p in shown],
                [p.published for p in shown],
                marker=marker,
                facecolors="none",
                edgecolors="tab:gray",
                label=f"published ({'macro F1' if metric == 'test/f1' else 'accuracy'})",
            )
    references = [p.reference_point for p in sized if p.reference_point]
    if references:
        ax.scatter(
            *zip(*references, strict=True), marker="^", color="tab:green", label="public references"
        )
    ours = [p for p in sized if p.measured and p.params]
    # seeds this far apart (tiny_cnn: one at chance) are drawn one by one, not as a mean whose
    # error bar spans the chart
    wild = [p for p in ours if mean_std(p.f1)[1] > WILD_STD]
    for pareto, colour, name in (
        (False, "tab:blue", "ours, reproduced"),
        (True, "tab:red", "ours, pareto"),
    ):
        shown = [p for p in ours if (p.target is not None) == pareto and p not in wild]
        if shown:
            stats = [mean_std(p.f1) for p in shown]
            ax.errorbar(
                [p.params for p in shown],
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                fmt="o",
                color=colour,
                label=name,
            )
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test macro F1 (published accuracies as given)")
    shown_values = [p.published for p in published] + [y for _, y in references]
    shown_values += [mean_std(p.f1)[0] for p in ours if p not in wild]
    shown_values += [v for p in wild for v in p.f1]
    bottom = max(0.85, min(shown_values, default=0.97) - 0.005)
    ax.set_ylim(bottom, 1.0)
    for p in wild:
        seeds = [max(v, bottom) for v in p.f1]  # a seed below the chart sits on its edge
        ax.scatter(
            [p.params] * len(seeds), seeds, marker="x", color="tab:purple", zorder=3, clip_on=False
        )
        for v in p.f1:
            if v < bottom:
                ax.annotate(
                    f"a seed at {v:.2f}",
                    (p.params, bottom),
                    xytext=(6, 6),
                    textcoords="offset points",
                    fontsize=8,
                )
    if wild:
        ax.scatter([], [], marker="x", color="tab:purple", label="ours, seeds that disagree")
    ax.set_title("MNIST: parameters vs test macro F1")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return fig


def summary_line(points: Sequence[Point]) -> str:
    """How many points are measured, for the command's last line."""
    measured = sum(p.measured for p in points)
    return f"{measured} of {len(points)} claims measured"


def select(patterns: Sequence[str], known: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """Experiment names matching ``patterns`` (``all``, names, or globs like ``pareto_*``)."""
    from fnmatch import fnmatch

    names = list(known)
    if not patterns or list(patterns) == ["all"]:
        return names
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch(n, pattern)]
        if not hits:
            raise ValueError(
                f"{pattern}: no experiment with a claim matches; known: {', '.join(names)}"
            )
        chosen += [h for h in hits if h not in chosen]
    return chosen
