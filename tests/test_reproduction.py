"""Published claims: every experiment config trains a few steps, the claims are consistent with
their sweeps, and the report is built from (fabricated, then real) sweep directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from mnistapp.reporting import reproduction
from tests.helpers import ROOT, fake_job, tiny_overrides

EXPERIMENTS = sorted(
    p.name.removesuffix(".yaml")
    for p in reproduction.EXPERIMENTS.iterdir()
    if p.name.endswith(".yaml")
)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_trains_a_few_steps(name: str, tiny_data: Path, tmp_path: Path) -> None:
    from mnistapp.cli.train import build

    overrides = [
        f"experiment={name}",
        *tiny_overrides(tiny_data, tmp_path),
        f"paths.output_dir={tmp_path}",
        "+trainer.fast_dev_run=2",  # two training and two validation steps, no files
        "logger=csv",
    ]
    with initialize_config_module("mnistapp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert "claim" not in cfg  # the published figures live in reporting/claims.yaml
    assert cfg.tags, f"experiment {name} should tag its runs"
    run = build(cfg, model_name=name)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.trainer.global_step == 2
    assert run.trainer.callback_metrics["train/loss"].isfinite()


def test_claims_match_their_experiments() -> None:
    from hydra.utils import instantiate

    from mnistapp.models import count_parameters

    points = reproduction.load_claims()
    studies = ["small models", "under 10k parameters", "MLP study", "LeNet study"]
    assert list(dict.fromkeys(p.study for p in points))[:4] == studies  # the file's order
    for point in points:
        assert point.metric in ("test/acc", "test/f1"), point
        config = yaml.safe_load((reproduction.EXPERIMENTS / f"{point.experiment}.yaml").read_text())
        assert "claim" not in config  # a run's config holds choices only
        swept = (config.get("hydra") or {}).get("sweeper", {}).get("params", {})
        # a point names only values its experiment's sweep actually runs
        for key, value in point.when.items():
            assert key in swept, (point.experiment, key)
            assert any(reproduction._same(value, v.strip()) for v in str(swept[key]).split(","))
        published = point.published if point.target is None else point.target
        values = published if isinstance(published, tuple) else (published,)
        assert all(0 < v <= 1 for v in values), point
        if point.target is not None:  # a pareto model keeps within the budget it claims
            with initialize_config_module("mnistapp.conf", version_base="1.3"):
                cfg = compose("config", overrides=[f"experiment={point.experiment}"])
            assert count_parameters(instantiate(cfg.model))[1] <= point.published_params
    # the write-ups' figures, one per claimed point
    assert len([p for p in points if p.target is None]) == 29


def test_the_report_gives_mean_and_std_per_point(tmp_path: Path) -> None:
    sweep = tmp_path / "mlp_depth" / "2026-11-23_10-00-00"
    accs = {1: [0.88, 0.90], 2: [0.70, 0.72]}
    num = 0
    for depth, values in accs.items():
        for seed, acc in enumerate(values, 1):
            record = {
                "status": "ok",
                "test/acc": acc,
                "test/f1": acc - 0.01,
                "params_total": 25450 + 1056 * (depth - 1),
                "epochs": 5,
                "wall_time_s": 10.0 + seed,
                "device": "x86_64 CPU, 2 cores",
            }
            fake_job(
                sweep, num, ["experiment=mlp_depth", f"seed={seed}", f"model.depth={depth}"], record
            )
            num += 1
    fake_job(
        sweep, num, ["experiment=mlp_depth", "seed=3", "model.depth=1"], None
    )  # never finished
    store = tmp_path / "store"
    assert reproduction.harvest(tmp_path, store) == [store / "mlp_depth.json"]
    points = reproduction.load_claims(["mlp_depth"])
    reproduction.fill(points, store)  # from the small file, not the run folders
    one, two, three, _ = points
    assert one.values == [0.88, 0.90] and one.failed == 1 and two.values == [0.70, 0.72]
    assert not three.measured
    assert one.difference_pp() == pytest.approx(100 * (0.89 - 0.888))
    assert not one.beyond_noise() and two.beyond_noise()  # -5.7 points

    markdown = reproduction.render(points, "mnistapp-reproduce mlp_depth")
    row = next(line for line in markdown.splitlines() if "| 2 x 32 |" in line)
    cells = [c.strip() for c in row.split("|")]
    assert cells[3:9] == ["76.70%", "71.00% ± 1.41 (n=2)", "-5.70 pp", "26,506", "5", "12"]
    assert cells[9] == "x86_64 CPU, 2 cores"
    assert "| 3 x 32 | 43.80% | not measured yet |" in markdown
    assert "89.00% ± 1.41 (n=2), 1 failed" in markdown
    reproduction.plot(points, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missed_target_is_marked_and_explained(tmp_path: Path) -> None:
    sweep = tmp_path / "pareto_841" / "2026-12-03_10-00-00"
    for num, f1 in enumerate([0.96, 0.97]):
        record = {
            "status": "ok",
            "test/acc": f1 + 0.001,
            "test/f1": f1,
            "params_total": 838,
            "epochs": 30,
            "wall_time_s": 300.0,
            "device": "x86_64 CPU, 2 cores",
            "precision": "bf16-mixed",
        }
        fake_job(sweep, num, ["experiment=pareto_841", f"seed={num + 1}"], record)
    store = tmp_path / "store"
    reproduction.harvest(tmp_path, store)
    (point,) = reproduction.load_claims(["pareto_841"])
    point.reason = "too small to fit the training set"
    reproduction.fill([point], store)
    markdown = reproduction.render([point], "mnistapp-reproduce pareto_841")
    row = next(line for line in markdown.splitlines() if line.startswith("| `pareto_841`"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[5:7] == ["0.9650 ± 0.0071 (n=2)", "**no**"]
    assert cells[-2] == "x86_64 CPU, 2 cores, bf16-mixed"  # mixed precision is said
    assert "- `pareto_841`: too small to fit the training set" in markdown


def test_seeds_that_disagree_are_drawn_one_by_one(tmp_path: Path) -> None:
    steady, wild = reproduction.load_claims(["small_16k", "tiny_cnn"])
    steady.f1, steady.values, steady.params = [0.981, 0.983], [0.981, 0.983], 16298
    wild.f1, wild.values, wild.params = [0.02, 0.951, 0.959], [0.02, 0.951, 0.959], 841
    fig = reproduction.plot([steady, wild], tmp_path / "pareto.png")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] >= 0.85  # the chance seed does not stretch the chart
    seeds = [c.get_offsets() for c in ax.collections if len(c.get_offsets()) == 3]
    assert len(seeds) == 1 and {x for x, _ in seeds[0]} == {841}  # tiny_cnn: three points
    (bar,) = ax.containers  # one error bar, small_16k's
    assert list(bar.lines[0].get_xdata()) == [16298]
    assert any("a seed at 0.02" in t.get_text() for t in ax.texts)


def _reproduce(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mnistapp.cli.reproduce", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nonesuch"], "nonesuch: no experiment with a claim matches; known: baseline_cnn,"),
        (["mlp_depth", "--seeds", "0"], "--seeds must be >= 1 (got 0)"),
        ([], "name the experiments to run (or 'all'), or pass --report-only"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], message: str) -> None:
    proc = _reproduce(*args)
    assert proc.returncode == 2
    assert f"mnistapp-reproduce: error: {message}" in proc.stderr.splitlines()[-1]


def test_reproduce_runs_seeds_and_writes_the_report(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "REPRODUCTION.md"
    proc = _reproduce(
        "mlp_dep*",
        "--seeds",
        "2",
        "--root",
        str(tmp_path / "runs"),
        "--out",
        str(out),
        "--",
        *tiny_overrides(tiny_data, tmp_path / "unused"),
        "trainer.max_epochs=1",
        "plots.enabled=false",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[1/1] mlp_depth: done" in proc.stdout
    (sweep,) = (tmp_path / "runs" / "mlp_depth").iterdir()
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(records) == 8 and {r["status"] for r in records} == {"ok"}  # 4 depths x 2 seeds
    markdown = out.read_text()
    for depth in (1, 2, 3, 4):
        row = next(
            line for line in markdown.splitlines() if f"`mlp_depth` | {depth} x 32 |" in line
        )
        assert "(n=2)" in row and "not measured" not in row
    assert (out.parent / "pareto.png").is_file()
    # the figures are kept small beside the report, to commit
    kept = json.loads((out.parent / "reproduction" / "mlp_depth.json").read_text())
    assert len(kept["jobs"]) == 8 and {"test/acc", "params_total"} <= set(kept["jobs"][0])


def test_runs_on_another_data_set_get_their_own_section(tmp_path: Path) -> None:
    data = tmp_path / "fashion_mnist"
    (data / "lenet_sgd" / "2026-11-23_10-00-00").mkdir(parents=True)
    (data / ".data").touch()
    for seed, acc in ((1, 0.90), (2, 0.92)):
        record = {"status": "ok", "test/acc": acc, "test/f1": acc - 0.01, "params_total": 44426}
        record |= {"epochs": 10, "wall_time_s": 50.0, "device": "x86_64 CPU, 2 cores"}
        sweep = data / "lenet_sgd" / "2026-11-23_10-00-00"
        fake_job(
            sweep, seed - 1, ["experiment=lenet_sgd", f"seed={seed}", "data=fashion_mnist"], record
        )
    reproduction.harvest(tmp_path, tmp_path / "store")
    others = reproduction.other_data(tmp_path / "store")
    markdown = reproduction.render(reproduction.load_claims(), "cmd", others)
    assert "## The same experiments on `data=fashion_mnist`" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| `lenet_sgd`"))
    assert "91.00% ± 1.41 (n=2)" in row and "0.9000 ± 0.0141" in row and "44,426" in row
