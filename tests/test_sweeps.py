"""Sweeps: real multiruns through Hydra's command line on tiny IDX files, and their summaries."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mnistapp.cli.summarize import main as summarize_main
from mnistapp.reporting.sweeps import mean_std, summarize, to_markdown
from tests.helpers import ROOT, compose, fake_job, run_cli, run_script, tiny_overrides

# one epoch of a small MLP keeps each job to a second or two once torch is imported
FAST = ("model=mlp", "trainer.max_epochs=1", "plots.enabled=false")


def _sweep_dir(log_dir: Path) -> Path:
    sweeps = list(log_dir.glob("multirun/*/*"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _summarize_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m mnistapp.cli.summarize args``, in this process: (status, stdout, stderr)."""
    try:
        status = summarize_main(list(args))
    except SystemExit as stop:
        status = int(stop.code or 0)
    out = capsys.readouterr()
    return status, out.out, out.err


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
    width_sweep: tuple[subprocess.CompletedProcess[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, sweep_dir = width_sweep
    written = {name: (sweep_dir / name).read_text() for name in ("summary.md", "summary.csv")}
    for name in written:
        (sweep_dir / name).unlink()

    status, out, err = _summarize_cli(capsys, str(sweep_dir))
    assert status == 0, err
    assert written["summary.md"] in out
    for name, text in written.items():
        assert (sweep_dir / name).read_text() == text

    status, _, err = _summarize_cli(capsys, str(tmp_path / "nope"))
    assert status == 2 and "is not a directory" in err
    status, _, err = _summarize_cli(capsys, str(tmp_path))
    assert status == 2 and "holds no multirun jobs" in err
    status, _, err = _summarize_cli(capsys, str(sweep_dir / "0"))
    assert status == 2 and "directory of one run or job" in err


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
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in this process; the exit status a failed job gives the command line:
    # test_a_failing_job_is_summarised_and_fails_the_exit_status
    with pytest.raises(SystemExit) as stopped:
        run_script(
            "train.py",  # no -m: hparams_search=optuna sets the multirun mode
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            *tiny_overrides(tiny_data, tmp_path),
            *FAST,
            # width 0 fails at once; the preset's fixed sampler seed draws it for trial 0
            "model.width=choice(0,8,16)",
            "optimizer.lr=tag(log, interval(0.001, 0.05))",
            capsys=capsys,
            monkeypatch=monkeypatch,
        )
    sweep_dir = _sweep_dir(tmp_path)
    rows = _rows(sweep_dir)
    assert len(rows) == 3
    assert [row["status"] for row in rows] == ["failed", "ok", "ok"]
    assert rows[0]["model.width"] == "0" and "width must be" in rows[0]["error"]
    assert "1 of 3 jobs failed" in str(stopped.value.code)  # exit status 1, this on stderr
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


def test_ddp_inside_a_search_trains_each_trial_once_in_its_own_dir(
    tiny_data: Path, tmp_path: Path
) -> None:
    # Rank 1 used to re-run the whole sweep (a stray sweep folder; in a search, a search of its
    # own whose trial stayed RUNNING), and the second job found the first job's DDP variables
    # and process group still there.
    import optuna

    proc = run_cli(
        "train.py",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer=ddp_cpu",
        *tiny_overrides(tiny_data, tmp_path),
        *FAST,
        "test=true",
        "hydra.sweeper.params={model.width: 'choice(8, 16)'}",
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
    # only rank 0 drove the search: two trials, both finished
    study = optuna.load_study(study_name="mnistapp", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_a_sigterm_stopped_sweep_is_summarised_and_resumed_in_its_folder(
    tiny_data: Path, tmp_path: Path
) -> None:
    # job 1 trains long enough to be stopped; job 2 never starts
    argv = ["train.py", "-m", *tiny_overrides(tiny_data, tmp_path), *FAST]
    argv.append("trainer.max_epochs=1,12,1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    sweep = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("multirun/*/*/1/checkpoints/last.ckpt")):
        assert time.monotonic() < deadline and sweep.poll() is None, "job 1 never started"
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    out, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM
    sweep_dir = _sweep_dir(tmp_path)
    assert [row["status"] for row in _rows(sweep_dir)] == ["ok", "interrupted", "interrupted"]
    markdown = (sweep_dir / "summary.md").read_text()
    assert "3 jobs: 1 ok, 0 failed, 2 interrupted." in markdown and markdown in out
    (command,) = [line for line in markdown.splitlines() if line.startswith("Resume with:")]
    assert out.count(command) == 1  # one command for the whole sweep

    first = (sweep_dir / "0" / "metrics.json").read_text()
    resumed = run_cli(*shlex.split(command.split("`")[1])[1:])
    assert _sweep_dir(tmp_path) == sweep_dir  # the same folder, no new sweep
    assert [row["status"] for row in _rows(sweep_dir)] == ["ok", "ok", "ok"]
    assert [row["epochs"] for row in _rows(sweep_dir)] == ["1", "12", "1"]
    assert "3 jobs: 3 ok, 0 failed." in resumed.stdout
    # job 1 went on from its last.ckpt; job 0 was not run again
    last = sweep_dir / "1" / "checkpoints" / "last.ckpt"
    assert f"Restoring states from the checkpoint path at {last}" in resumed.stdout
    assert (sweep_dir / "0" / "metrics.json").read_text() == first


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
    launcher = compose(f"hydra/launcher={preset}", "hydra.launcher.partition=gpu").hydra.launcher
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
    assert [job.status for job in summary.jobs] == ["ok", "failed"]
    assert "did not finish" in summary.jobs[1].record["error"]
    assert "- job 1 (`model.width=16`): no metrics.json" in to_markdown(summary)
    assert "seeds" not in to_markdown(summary)  # nothing to group


def test_planned_jobs_that_never_started_are_interrupted_with_one_resume_command(
    tmp_path: Path,
) -> None:
    task = ["model=mlp", "model.width=8,16", "seed=1,2"]
    hydra = {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}}
    launched = ["hydra.mode=MULTIRUN", "hydra/launcher=joblib", f"hydra.sweep.dir={tmp_path}"]
    hydra["overrides"] = {"task": task, "hydra": launched}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    ok = {"status": "ok", "params_total": 100, "test/f1": 0.5, "val/f1_best": 0.5}
    fake_job(tmp_path, 0, ["model=mlp", "model.width=8", "seed=1"], ok)
    stopped = {"status": "interrupted", "error": "stopped by SIGTERM"}
    fake_job(tmp_path, 1, ["model=mlp", "model.width=8", "seed=2"], stopped)

    summary = summarize(tmp_path)
    assert [(job.num, job.status) for job in summary.jobs] == [
        (0, "ok"), (1, "interrupted"), (2, "interrupted"), (3, "interrupted")
    ]  # fmt: skip
    assert summary.jobs[3].overrides == {"model": "mlp", "model.width": "16", "seed": "2"}
    assert summary.varying == ["model.width", "seed"]
    markdown = to_markdown(summary)
    assert "4 jobs: 1 ok, 0 failed, 3 interrupted." in markdown
    assert "## Failed jobs" not in markdown
    (line,) = [x for x in markdown.splitlines() if x.startswith("Resume with:")]
    assert shlex.split(line.split("`")[1]) == [
        "python", "train.py", "-m", *task, "hydra/launcher=joblib",
        f"hydra.sweep.dir={tmp_path}", "hydra/sweeper=resume",
    ]  # fmt: skip
