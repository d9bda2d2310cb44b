"""Published claims against our runs: ``docs/REPRODUCTION.md`` and ``docs/pareto.png``.

The claims live in ``claims.yaml`` beside this module (its header says what a point holds); the
experiment configs hold only the recipes. Runs are multiruns over seeds (``mnistapp-reproduce``);
:func:`harvest` keeps each sweep's figures in ``docs/reproduction/<experiment>.json``
(committed), and the report is built from those, so runs made on any machine count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mnistapp.reporting.records import markdown_table
from mnistapp.reporting.sweeps import (
    NotASweepError,
    collect_jobs,
    mean_std,
    params_chart,
    plus_minus,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXPERIMENTS = files("mnistapp.conf").joinpath("experiment")
# every published figure, in report order; run configs carry none
CLAIMS = files("mnistapp.reporting").joinpath("claims.yaml")
# below this many percentage points, or twice the seeds' std, a difference is noise
NOISE_PP = 0.2
# seeds whose macro F1 spread beyond this are drawn one by one in docs/pareto.png
WILD_STD = 0.02
# what the results file keeps of each job's metrics.json, in this order
KEPT = ("status", "error", "test/acc", "test/f1", "val/f1_best", "train/acc", "params_total")
KEPT += ("epochs", "wall_time_s", "device", "precision")


@dataclass
class Point:
    """One published figure (a point of ``claims.yaml``) and, once measured, ours over seeds."""

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

    def __post_init__(self) -> None:
        # YAML gives lists and numbers where a point holds tuples and strings
        self.label = str(self.label)
        self.when = {k: str(v) for k, v in (self.when or {}).items()}
        if isinstance(self.published, list):
            self.published = tuple(self.published)
        self.reference_point = tuple(self.reference_point) if self.reference_point else None

    @property
    def measured(self) -> bool:
        return bool(self.values)

    def difference_pp(self) -> float | None:
        """Ours minus published, in percentage points (0 inside a published range)."""
        if not self.measured or self.published is None:
            return None
        mean = mean_std(self.values)[0]
        low, high = self.published if isinstance(self.published, tuple) else (self.published,) * 2
        return 100 * (mean - min(max(mean, low), high))

    def met(self) -> bool | None:
        """Whether the seeds' mean reaches the pareto ``target``; None before any run."""
        if self.target is None or not self.measured:
            return None
        return mean_std(self.values)[0] >= self.target

    def beyond_noise(self) -> bool:
        diff = self.difference_pp()
        return diff is not None and abs(diff) > max(NOISE_PP, 200 * mean_std(self.values)[1])


def load_claims(names: Sequence[str] | None = None) -> list[Point]:
    """The points of :data:`CLAIMS` in report order (of the experiments ``names`` only)."""
    return [
        Point(**{"metric": study.get("metric"), **raw, "study": study["study"]})
        for study in yaml.safe_load(CLAIMS.read_text())
        for raw in study["points"]
        if names is None or raw["experiment"] in names
    ]


def _same(a: str, b: str) -> bool:
    """Override values as equal: ``5e-4`` and ``0.0005`` are one learning rate."""
    try:
        return a == b or math.isclose(float(a), float(b))
    except ValueError:
        return False


def harvest(root: Path, store: Path) -> list[Path]:
    """The newest sweep of each experiment under ``root`` as ``store/<experiment>.json``."""
    written = []
    for base in [root, *(p for p in root.glob("*") if (p / ".data").is_file())]:
        target = store if base == root else store / base.name
        for exp_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            sweeps = sorted(p for p in exp_dir.glob("*") if p.is_dir())
            if not sweeps or (exp_dir / ".data").exists():
                continue
            try:
                jobs = collect_jobs(sweeps[-1])
            except NotASweepError:
                continue
            kept = [{k: j.record[k] for k in KEPT if k in j.record} for j in jobs]
            rows = [{"overrides": j.overrides, **r} for j, r in zip(jobs, kept, strict=True)]
            target.mkdir(parents=True, exist_ok=True)
            path = target / f"{exp_dir.name}.json"
            path.write_text(json.dumps({"sweep": str(sweeps[-1]), "jobs": rows}, indent=1) + "\n")
            written.append(path)
    return written


def fill(points: Sequence[Point], store: Path) -> None:
    """Attach to each point its jobs' results from ``store/<experiment>.json``."""
    for point in points:
        path = store / f"{point.experiment}.json"
        for job in json.loads(path.read_text())["jobs"] if path.is_file() else []:
            if not all(_same(job["overrides"].get(k, ""), v) for k, v in point.when.items()):
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
    """Experiments run on another data set (``store/<data>/<experiment>.json``), by data set."""
    found: dict[str, list[Point]] = {}
    for data_dir in sorted(p for p in store.glob("*") if p.is_dir()):
        found[data_dir.name] = []
        for path in sorted(data_dir.glob("*.json")):
            point = Point(path.stem, data_dir.name, "test/acc", path.stem)
            fill([point], data_dir)
            if point.measured or point.failed:
                found[data_dir.name].append(point)
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
    text = f"{plus_minus(point.values, point.metric == 'test/acc')} (n={len(point.values)})"
    return text + (f", {point.failed} failed" if point.failed else "")


def _runs(point: Point) -> list[str]:
    """The cells every table ends with: params, epochs, wall s/run, ran on."""
    if not point.measured:
        return ["", "", "", ""]
    epochs = sorted(set(point.epochs))
    shown = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
    params = f"{point.params:,}" if point.params else ""
    wall = f"{mean_std(point.wall_s)[0]:.0f}"
    return [params, shown, wall, ", ".join(sorted(point.devices)) or "?"]


def _study_row(p: Point) -> list[str]:
    diff = p.difference_pp()
    # not beyond_noise(): a seed that failed to learn makes the std huge, and its reason must show
    why = (p.reason or "") if diff is not None and abs(diff) > NOISE_PP else ""
    diff_text = "" if diff is None else f"{diff:+.2f} pp"
    ours = [_pct(p.published, p.metric), _ours(p), diff_text]
    return [f"`{p.experiment}`", p.label, *ours, *_runs(p), why]


def _pareto_row(p: Point) -> list[str]:
    met = "" if p.met() is None else "yes" if p.met() else "**no**"
    budget = f"{p.published_params:,}" if p.published_params else ""
    target = _pct(p.target, p.metric)
    return [f"`{p.experiment}`", budget, target, p.reference or "", _ours(p), met, *_runs(p)]


INTRO = f"""# Reproducing the published claims

Every claim of the five write-ups our users arrive from (`../shared/studies/`) is a
point in `src/mnistapp/reporting/claims.yaml`, run by an `experiment=` config
(`conf/experiment/`, the recipe as the write-up states it). Ours are means ± sample std
over seeds, each run's
checkpoint chosen on validation macro F1 and then tested once on the 10k test set. Unless
an experiment says otherwise, validation is 5,000 of the 60k training images (the LeNet
study held none out). A difference beyond twice the seeds' std is more than noise; one
beyond {NOISE_PP} points gets a reason where we have one. Every run's figures are in
`docs/reproduction/<experiment>.json`. "ran on" names the machine and any mixed
precision (`-- trainer.precision=bf16-mixed`); "wall s/run" is fitting and testing
(two reproductions may have shared the machine, one thread each). Run and rebuilt by:
"""
RUNS = ["params", "epochs", "wall s/run", "ran on"]


def render(
    points: Sequence[Point], command: str, others: Mapping[str, Sequence[Point]] | None = None
) -> str:
    """``docs/REPRODUCTION.md``: one table per study, the pareto table, other data sets."""
    metric_name = {"test/acc": "test accuracy", "test/f1": "test macro F1"}
    lines = [*INTRO.splitlines(), "", "```bash", command, "```", ""]
    for study in dict.fromkeys(p.study for p in points if p.target is None):
        rows = [p for p in points if p.study == study and p.target is None]
        headers = ["experiment", "claim", "published", "ours", "difference", *RUNS, "why we differ"]
        lines += [f"## {study} ({metric_name[rows[0].metric]})", ""]
        lines += [*markdown_table(headers, map(_study_row, rows), "llrrrrrrll"), ""]
    if pareto := [p for p in points if p.target is not None]:
        headers = ["experiment", "budget", "target", "public reference", "ours", "met", *RUNS]
        lines += ["## Beating each published point at its own parameter budget", ""]
        lines += markdown_table(headers, map(_pareto_row, pareto), "lrrlrlrrrl")
        if missed := [p for p in pareto if p.reason and p.met() is False]:
            lines += ["", "Where a target is missed:", ""]
            lines += [f"- `{p.experiment}`: {p.reason}" for p in missed]
        lines += ["", "![parameters vs test macro F1](pareto.png)", ""]
    for data, measured in (others or {}).items():
        headers = ["experiment", "test accuracy", "test macro F1", *RUNS]
        f1 = {p.experiment: plus_minus(p.f1) if p.f1 else "" for p in measured}
        rows = [[f"`{p.experiment}`", _ours(p), f1[p.experiment], *_runs(p)] for p in measured]
        lines += [f"## The same experiments on `data={data}`", ""]
        lines += [*markdown_table(headers, rows, "lrrrrrl"), ""]
    return "\n".join(lines)


def plot(points: Sequence[Point], path: Path) -> Figure:
    """Parameters vs test macro F1: published points, public references and ours (mean ± std)."""
    ylabel = "test macro F1 (published accuracies as given)"
    fig, ax = params_chart(ylabel, "MNIST: parameters vs test macro F1")
    sized = [p for p in points if p.published_params]
    published = [p for p in sized if isinstance(p.published, float | int)]
    for metric, marker, name in (("test/f1", "o", "macro F1"), ("test/acc", "s", "accuracy")):
        if shown := [p for p in published if p.metric == metric]:
            xy = [p.published_params for p in shown], [p.published for p in shown]
            style = {"facecolors": "none", "edgecolors": "tab:gray"}
            ax.scatter(*xy, marker=marker, label=f"published ({name})", **style)
    if references := [p.reference_point for p in sized if p.reference_point]:
        xy = zip(*references, strict=True)
        ax.scatter(*xy, marker="^", color="tab:green", label="public references")
    ours = [p for p in sized if p.measured and p.params]
    # seeds this far apart (tiny_cnn: one at chance) are drawn one by one, not as a mean whose
    # error bar spans the chart
    wild = [p for p in ours if mean_std(p.f1)[1] > WILD_STD]
    for pareto, colour, name in ((False, "tab:blue", "reproduced"), (True, "tab:red", "pareto")):
        if shown := [p for p in ours if (p.target is not None) == pareto and p not in wild]:
            means, stds = zip(*(mean_std(p.f1) for p in shown), strict=True)
            xs = [p.params for p in shown]
            ax.errorbar(xs, means, yerr=stds, fmt="o", color=colour, label=f"ours, {name}")
    shown_values = [p.published for p in published] + [y for _, y in references]
    shown_values += [mean_std(p.f1)[0] for p in ours if p not in wild]
    shown_values += [v for p in wild for v in p.f1]
    bottom = max(0.85, min(shown_values, default=0.97) - 0.005)
    ax.set_ylim(bottom, 1.0)
    for p in wild:
        seeds = [max(v, bottom) for v in p.f1]  # a seed below the chart sits on its edge
        style = {"marker": "x", "color": "tab:purple", "zorder": 3, "clip_on": False}
        ax.scatter([p.params] * len(seeds), seeds, **style)
        for v in (v for v in p.f1 if v < bottom):
            note = f"a seed at {v:.2f}"
            ax.annotate(
                note, (p.params, bottom), xytext=(6, 6), textcoords="offset points", fontsize=8
            )
    if wild:
        ax.scatter([], [], marker="x", color="tab:purple", label="ours, seeds that disagree")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return fig


def select(patterns: Sequence[str], known: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """Experiment names matching ``patterns`` (``all``, names, or globs like ``pareto_*``)."""
    names = list(known)
    if not patterns or list(patterns) == ["all"]:
        return names
    chosen: list[str] = []
    for pattern in patterns:
        if not (hits := [n for n in names if fnmatch(n, pattern)]):
            known_names = ", ".join(names)
            raise ValueError(f"{pattern}: no experiment with a claim matches; known: {known_names}")
        chosen += [h for h in hits if h not in chosen]
    return chosen
