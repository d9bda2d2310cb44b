"""Sweeps: real multiruns through Hydra's command line on tiny IDX files, and their summaries."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnistapp.reporting.sweeps import mean_std, summarize, to_markdown
from tests.helpers import ROOT, fake_job, run_cli, tiny_overrides

# one epoch of a small MLP keeps each job to a second or two once torch is imported
FAST = ("model=mlp", "trainer.max_epochs=1", "plots.enabled=false")


def _sweep_dir(log_dir: Path) -> Path:
    sweeps = list(log_dir.glob("multirun/*/*"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _summarize_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mnistapp.cli.summarize", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _mlp_params(width: int) -> int:
    """One hidden layer on 28x28 inputs: weights and biases of both Linear layers."""
    return 28 * 28 * width + width + width * 10 + 10


@pytest.fixture(scope="module")
def width_sweep(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    log_dir = tmp_path_factory.mktemp("widths")
    proc = run_cli(
        "train.py", "-m", *tiny_overrides(tiny_data, log_dir), *FAST, "model.width=8,16,32"
    )
    return proc, _sweep_dir(log_dir)


def test_width_sweep_writes_csv_markdown_and_chart(
    width_sweep: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    from matplotlib.image import imread

    from mnistapp.models import MLP, count_parameters

    proc, sweep_dir = width_sweep
    rows = _rows(sweep_dir)
    assert [row["job"] for row in rows] == ["0", "1", "2"]
    assert [row["model.width"] for row in rows] == ["8", "16", "32"]
    for row in rows:
        width = int(row["model.width"])
        assert int(row["params_total"]) == count_parameters(MLP(width=width))[1]
        assert int(row["params_total"]) == _mlp_params(width)
        assert row["status"] == "ok" and not row["error"]
        assert row["epochs"] == "1" and float(row["wall_time_s"]) > 0
        for key in ("val/f1_best", "test/acc", "test/f1"):
            assert 0 <= float(row[key]) <= 1 + 1e-6  # float32 rounding can pass 1 slightly
    # nothing that stayed the same across jobs is a column
    assert "model" not in rows[0] and "trainer.max_epochs" not in rows[0]

    markdown = (sweep_dir / "summary.md").read_text()
    assert "3 jobs: 3 ok, 0 failed." in markdown
    assert f"| 0 | model.width=8 | {_mlp_params(8):,} |" in markdown
    assert "**Best val/f1_best: job" in markdown
    assert markdown in proc.stdout  # printed at the end of the sweep too

    png = sweep_dir / "summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    height, width, _ = imread(png).shape
    assert height > 300 and width > 400


def test_summarize_after_the_fact_gives_the_same_table(
    width_sweep: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _, sweep_dir = width_sweep
    written = {name: (sweep_dir / name).read_text() for name in ("summary.md", "summary.csv")}
    for name in written:
        (sweep_dir / name).unlink()

    proc = _summarize_cli(str(sweep_dir))
    assert proc.returncode == 0, proc.stderr
    assert written["summary.md"] in proc.stdout
    for name, text in written.items():
        assert (sweep_dir / name).read_text() == text

    missing = _summarize_cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    empty = _summarize_cli(str(tmp_path))
    assert empty.returncode == 2 and "holds no multirun jobs" in empty.stderr
    a_job = _summarize_cli(str(sweep_dir / "0"))
    assert a_job.returncode == 2 and "directory of one run or job" in a_job.stderr


def test_a_failing_job_is_summarised_and_fails_the_exit_status(
    tiny_data: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        "train.py",
        "-m",
        *tiny_overrides(tiny_data, tmp_path),
        *FAST,
        "optimizer.lr=0.05,nan,0.1",  # a NaN learning rate is refused
        check=False,
    )
    assert proc.returncode != 0
    assert "1 of 3 jobs failed" in proc.stderr
    sweep_dir = _sweep_dir(tmp_path)
    rows = _rows(sweep_dir)
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"] == "ConfigError: optimizer.lr must be a finite number > 0 (got nan)"
    markdown = (sweep_dir / "summary.md").read_text()
    assert "3 jobs: 2 ok, 1 failed." in markdown
    assert "- job 1 (`optimizer.lr=nan`): ConfigError: optimizer.lr must be" in markdown
    assert (sweep_dir / "summary.png").is_file()


def test_optuna_search_survives_a_failed_trial_and_names_the_best(
    tiny_data: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        "train.py",  # no -m: hparams_search=optuna sets the multirun mode
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        *tiny_overrides(tiny_data, tmp_path),
        *FAST,
        # width 0 fails at once; the preset's fixed sampler seed draws it for trial 0
        "model.width=choice(0,8,16)",
        "optimizer.lr=tag(log, interval(0.001, 0.05))",
        check=False,
    )
    sweep_dir = _sweep_dir(tmp_path)
    rows = _rows(sweep_dir)
    assert len(rows) == 3
    assert [row["status"] for row in rows] == ["failed", "ok", "ok"]
    assert rows[0]["model.width"] == "0" and "width must be" in rows[0]["error"]
    assert proc.returncode == 1 and "1 of 3 jobs failed" in proc.stderr
    # every trial got a value for each searched parameter (data.batch_size is fixed above)
    summary = summarize(sweep_dir)
    assert {"optimizer.lr", "model.width"} <= set(summary.varying)
    assert {"optimizer", "data.batch_size"} <= {*summary.varying, *summary.fixed}

    optuna = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = max(rows[1:], key=lambda row: float(row["val/f1_best"]))
    assert optuna["best_params"]["model.width"] == int(best["model.width"])
    assert (
        f"**Optuna best trial (objective {optuna['best_value']:.4g}): job {best['job']}**"
        in (sweep_dir / "summary.md").read_text()
    )


def test_joblib_runs_jobs_in_parallel_each_in_its_own_dir(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *tiny_overrides(tiny_data, tmp_path),
        *FAST,
        "model.width=8,16",
    )
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    sweep_dir = _sweep_dir(tmp_path)
    rows = _rows(sweep_dir)
    assert [(row["model.width"], row["status"]) for row in rows] == [("8", "ok"), ("16", "ok")]
    run_dirs = {json.loads((sweep_dir / n / "metrics.json").read_text())["run_dir"] for n in "01"}
    assert run_dirs == {str(sweep_dir / "0"), str(sweep_dir / "1")}


def test_ddp_inside_a_sweep_runs_each_job_once_in_its_own_dir(
    tiny_data: Path, tmp_path: Path
) -> None:
    # Rank 1 used to re-run the whole sweep (a stray sweep folder), and the second job found
    # the first job's DDP variables and process group still there.
    proc = run_cli(
        "train.py",
        "-m",
        "trainer=ddp_cpu",
        *tiny_overrides(tiny_data, tmp_path),
        *FAST,
        "model.width=8,16",
        timeout=600,
    )
    sweep_dir = _sweep_dir(tmp_path)  # exactly one sweep folder
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    assert list(tmp_path.glob("*/*/.hydra")) == []  # and no single-run folder beside it
    assert (
        proc.stdout.count("Initializing distributed")
        + proc.stderr.count("Initializing distributed")
        == 4
    ), "each job should start its own 2 ranks"
    for job in "01":
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["status"] == "ok", metrics.get("error")
        # metrics reduced across both ranks: all 200 test digits in the confusion matrix
        assert sum(map(sum, metrics["test/confusion"])) == 200
        # only rank 0 writes the job's files; rank 1 logs to its own file only
        assert (sweep_dir / job / "train_ddp_process_1.log").is_file()
        assert [p.name for p in (sweep_dir / job).glob("*/.hydra")] == []
    assert [row["status"] for row in _rows(sweep_dir)] == ["ok", "ok"]


def test_submitit_local_runs_the_cluster_path(tiny_data: Path, tmp_path: Path) -> None:
    # one job: submitit's polling makes each job slow to collect, and the path is the same
    run_cli(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        *tiny_overrides(tiny_data, tmp_path),
        *FAST,
        "model.width=8",
    )
    sweep_dir = _sweep_dir(tmp_path)
    assert [row["status"] for row in _rows(sweep_dir)] == ["ok"]
    assert (sweep_dir / ".submitit").is_dir() and (sweep_dir / "summary.png").is_file()


@pytest.mark.parametrize(("preset", "gpus"), [("slurm", None), ("slurm_gpu", 1)])
def test_slurm_launcher_presets_compose(preset: str, gpus: int | None) -> None:
    proc = run_cli(
        "train.py", f"hydra/launcher={preset}", "hydra.launcher.partition=gpu", "--cfg", "hydra"
    )
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == gpus


# Summaries of hand-written sweep directories: cheap, no training.


@pytest.mark.parametrize("replicate", ["seed", "+repeat"])
def test_seeds_are_grouped_into_mean_and_std(tmp_path: Path, replicate: str) -> None:
    f1 = {8: [0.80, 0.90, 1.00], 16: [0.91, 0.92, 0.96]}
    num = 0
    for width, scores in f1.items():
        for seed, score in enumerate(scores, start=1):
            record = {"status": "ok", "params_total": _mlp_params(width), "test/f1": score}
            record |= {"test/acc": score, "val/f1_best": score}
            overrides = ["model=mlp", f"model.width={width}", f"{replicate}={seed}"]
            fake_job(tmp_path, num, overrides, record)
            num += 1

    summary = summarize(tmp_path)
    assert summary.varying == ["model.width", replicate.lstrip("+")]
    assert summary.fixed == {"model": "mlp"}
    markdown = to_markdown(summary)
    assert "## Mean ± std over seeds" in markdown
    for width, scores in f1.items():
        mean, std = statistics.fmean(scores), statistics.stdev(scores)
        assert mean_std(scores) == (mean, std)
        cell = f"{mean:.4f} ± {std:.4f}"
        assert f"| model.width={width} | 3/3 | {_mlp_params(width):,} | {cell} |" in markdown


def test_a_job_without_metrics_counts_as_failed(tmp_path: Path) -> None:
    ok = {"status": "ok", "params_total": 100, "test/f1": 0.5, "val/f1_best": 0.5}
    fake_job(tmp_path, 0, ["model.width=8"], ok)
    fake_job(tmp_path, 1, ["model.width=16"], None)  # killed before it wrote metrics.json
    summary = summarize(tmp_path)
    assert [job.ok for job in summary.jobs] == [True, False]
    assert "did not finish" in summary.jobs[1].record["error"]
    assert "- job 1 (`model.width=16`): no metrics.json" in to_markdown(summary)
    assert "seeds" not in to_markdown(summary)  # nothing to group
