"""A user's mistake is one line and exit status 2: no traceback, no run folder left behind."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnistapp.training.checkpoints import load_checkpoint
from tests.helpers import ROOT, run_cli, run_module, tiny_overrides

NO_DEVELOPER = {"HYDRA_FULL_ERROR": "0"}  # the test runner sets it; users do not


def _refused(script: str, *args: str) -> str:
    """Run ``script`` (a file of the repository, or a module) and return its one error line."""
    run = run_module if script.startswith("mnistapp.") else run_cli
    proc = run(script, *args, check=False, env=NO_DEVELOPER, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, and nothing else on stderr
    return lines[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.width=0", "train: error: model.width must be an integer >= 1 (got 0)"),
        ("optimizer.lr=-1", "train: error: optimizer.lr must be a finite number > 0 (got -1)"),
        ("optimizer.lr=1e400", "train: error: optimizer.lr must be a finite number > 0 (got inf)"),
        ("seed=abc", "train: error: seed must be an integer >= 0 (got 'abc')"),
        (
            "optimizer.momentum=1.5",
            "train: error: optimizer.momentum must be a finite number in [0, 1] (got 1.5)",
        ),
        ("data.batch_size=0", "train: error: data.batch_size must be an integer >= 1 (got 0)"),
        (
            "data.val_size=60000",
            "train: error: data.val_size must be an integer in [0, 60000) (got 60000)",
        ),
        (
            "trainer.max_epochs=0",
            "train: error: trainer.max_epochs must be an integer >= 1 (got 0)",
        ),
        ("trainer.precision=17", "train: error: trainer.precision must be one of"),
        (
            "channels_last=maybe",
            "train: error: channels_last must be one of [True, False] (got 'maybe')",
        ),
        ("max_loss=0", "train: error: max_loss must be a finite number > 0 (got 0)"),
        ("trainer.accelerator=gpu", "train: error: trainer.accelerator=gpu needs a GPU"),
        (
            "scheduler=onecycle scheduler.scheduler.max_lr=0",
            "train: error: scheduler.scheduler.max_lr must be a finite number > 0 (got 0)",
        ),
        (
            "model=baseline_cnn model.depth=9",
            "train: error: model: BaselineCNN with image_size=28, depth=9",
        ),
        (
            "model=nonexistent",
            "train: error: model=nonexistent is not an option; model is one of: baseline_cnn,",
        ),
        ("model=lenett", "train: error: model=lenett is not an option (did you mean lenet?)"),
        (
            "ckpt_path=/nowhere.ckpt",
            "train: error: ckpt_path=/nowhere.ckpt is not a checkpoint file",
        ),
        ("model.widht=3", "train: error: model.widht is not a setting (did you mean width?)"),
        (
            "data.augment={shear:3}",
            "train: error: data: data.augment.shear is not a setting; data.augment takes degrees,",
        ),
        ("optimizer.lr=(", "train: error: Error parsing override 'optimizer.lr=('"),
    ],
)
def test_bad_training_values_are_one_line(
    tiny_data: Path, tmp_path: Path, override: str, message: str
) -> None:
    if "gpu" in override:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    line = _refused("train.py", *tiny_overrides(tiny_data, tmp_path), *override.split())
    assert line.startswith(message), line
    # nothing that looks like a run: no run folder at all
    assert list(tmp_path.rglob("metrics.json")) == [] and list(tmp_path.rglob(".hydra")) == []


def test_developers_still_get_everything(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train.py", *tiny_overrides(tiny_data, tmp_path), "model=nonexistent", check=False
    )  # HYDRA_FULL_ERROR=1, as the test runner sets it
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "MissingConfigException" in proc.stderr


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (
            "eval.py",
            ["data.eval_batch_size=0"],
            "eval: error: data.eval_batch_size must be an integer >= 1 (got 0)",
        ),
        (
            "eval.py",
            ["trainer=nope"],
            "eval: error: trainer=nope is not an option; trainer is one of:",
        ),
        (
            "eval.py",
            ["ckpt_path=/nowhere.ckpt"],
            "eval: error: no checkpoint file at /nowhere.ckpt",
        ),
    ],
)
def test_bad_eval_values_are_one_line(
    tiny_data: Path, tmp_path: Path, script: str, args: list[str], message: str
) -> None:
    line = _refused(script, f"paths.data_dir={tiny_data}", f"paths.log_dir={tmp_path}", *args)
    assert line.startswith(message), line
    assert list(tmp_path.rglob("metrics.json")) == []


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        (
            "mnistapp.cli.export",
            ["format=tflite"],
            "export: error: format must be one of ['onnx', 'torchscript'] (got 'tflite')",
        ),
        (
            "mnistapp.cli.export",
            ["tolerance=-1"],
            "export: error: tolerance must be a finite number > 0 (got -1)",
        ),
        (
            "mnistapp.cli.predict",
            ["batch_size=0"],
            "predict: error: batch_size must be an integer >= 1 (got 0)",
        ),
        (
            "mnistapp.cli.predict",
            ["ckpt_path=/nowhere.ckpt", "inputs=x.png"],
            "predict: error: no checkpoint file at /nowhere.ckpt",
        ),
    ],
)
def test_bad_export_and_predict_values_are_one_line(
    tmp_path: Path, module: str, args: list[str], message: str
) -> None:
    line = _refused(module, f"paths.log_dir={tmp_path}", *args)
    assert line.startswith(message), line
    assert list(tmp_path.rglob("metrics.json")) == []


def test_a_diverging_run_stops_with_epoch_step_and_loss(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",
        "optimizer.lr=1e9",
        check=False,
        env=NO_DEVELOPER,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # after Lightning's own warnings
    assert re.fullmatch(
        r"train: training diverged at epoch 0, step \d+: loss \S+ \(non-finite or above "
        r"max_loss=1000\); try a lower optimizer.lr",
        line,
    ), line
    (metrics,) = tmp_path.glob("*/*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["status"] == "diverged" and record["error"] in line
    assert not list(metrics.parent.glob("checkpoints/*.ckpt"))  # stopped before any checkpoint


def test_a_diverging_job_is_marked_and_the_sweep_goes_on(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        "-m",
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",
        "trainer.max_epochs=1",
        "plots.enabled=false",
        "optimizer.lr=1e9,0.05",
        check=False,
    )
    assert proc.returncode == 1  # a job did not finish well
    (sweep,) = tmp_path.glob("multirun/*/*")
    with (sweep / "summary.csv").open(newline="") as f:
        rows = {float(row["optimizer.lr"]): row for row in csv.DictReader(f)}
    assert rows[1e9]["status"] == "diverged" and "diverged at epoch 0" in rows[1e9]["error"]
    assert rows[0.05]["status"] == "ok"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_a_stopped_run_saves_last_ckpt_and_says_how_to_resume(
    tiny_data: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    overrides = [*tiny_overrides(tiny_data, tmp_path), "model=mlp", "plots.enabled=false"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides, "trainer.max_epochs=1000"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/*/csv/metrics.csv")):  # it is training: stop it
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    (metrics,) = tmp_path.glob("*/*/metrics.json")
    record = json.loads(metrics.read_text())
    last = metrics.parent / "checkpoints" / "last.ckpt"
    assert record["status"] == "interrupted" and record["error"] == f"stopped by {signum.name}"
    assert record["resume"] == f"python train.py resume={metrics.parent}"
    assert f"Resume with: {record['resume']}" in stderr and "Traceback" not in stderr
    # the checkpoint is whole and safe to load, and the run goes on from it in its folder
    epoch = load_checkpoint(last)["epoch"]
    run_cli("train.py", f"resume={metrics.parent}", f"trainer.max_epochs={epoch + 2}")
    resumed = json.loads(metrics.read_text())
    assert resumed["status"] == "ok" and resumed["epochs"] == epoch + 2


@pytest.mark.parametrize(
    ("when", "saved"),
    [
        # killed as epoch 2 starts: last.ckpt is the end of epoch 1
        (["+callbacks.killer.epoch=2"], ("epoch", 1)),
        # killed mid-epoch, before step 23 of 16-step epochs: last.ckpt is step 20 (epoch 1)
        (
            ["+callbacks.killer.step=23", "callbacks.last_checkpoint.every_n_train_steps=5"],
            ("global_step", 20),
        ),
    ],
    ids=["after-an-epoch", "mid-epoch"],
)
def test_a_killed_run_resumes_in_its_folder_to_the_same_result(
    tiny_data: Path, tmp_path: Path, when: list[str], saved: tuple[str, int]
) -> None:
    def overrides(log_dir: Path) -> list[str]:
        return [
            *tiny_overrides(tiny_data, log_dir),
            "model=mlp",
            "model.dropout=0.2",  # random draws every step: the RNG state must come back too
            "trainer.max_epochs=4",
            "trainer.deterministic=true",
            "plots.enabled=false",
        ]

    steps = [o for o in when if "every_n_train_steps" in o]  # checkpoints do not change training
    run_cli("train.py", *overrides(tmp_path / "whole"), *steps)
    (whole,) = (tmp_path / "whole").glob("*/*/metrics.json")

    marker = tmp_path / "killed-once"
    proc = run_cli(
        "train.py",
        *overrides(tmp_path / "killed"),
        "+callbacks.killer._target_=tests.faults.KillAt",
        f"+callbacks.killer.marker={marker}",
        *when,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL and marker.exists()
    (run_dir,) = (tmp_path / "killed").glob("*/*")
    assert not (run_dir / "metrics.json").exists()  # killed: nothing was recorded
    key, value = saved
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")[key] == value

    run_cli("train.py", f"resume={run_dir}")
    assert [p.parent for p in (tmp_path / "killed").glob("*/*/metrics.json")] == [run_dir]
    expected, resumed = (json.loads(p.read_text()) for p in (whole, run_dir / "metrics.json"))
    assert resumed["status"] == "ok" and resumed["epochs"] == expected["epochs"] == 4
    # the last epoch's figures and final weights show the whole trajectory (the test figures
    # come from the best checkpoint, which on these easy digits may predate the kill)
    for key in ("test/acc", "test/f1", "val/f1_best", "test/loss", "train/loss", "val/loss"):
        assert abs(resumed[key] - expected[key]) <= 1e-6, (key, resumed[key], expected[key])
    final = [
        load_checkpoint(Path(r["run_dir"]) / "checkpoints" / "last.ckpt")
        for r in (expected, resumed)
    ]
    # the last save: the end (step 64), or step 60 with a checkpoint every 5 steps
    assert final[0]["global_step"] == final[1]["global_step"] >= 60
    weights = [c["state_dict"] for c in final]
    for name, value in weights[0].items():
        assert (weights[1][name].float() - value.float()).abs().max() <= 1e-6, name


def test_resume_refuses_another_run_and_a_missing_one(tmp_path: Path) -> None:
    line = _refused("train.py", f"resume={tmp_path}")
    assert line == (
        f"train: error: resume={tmp_path}: {tmp_path} is not a run folder with "
        "checkpoints/last.ckpt"
    )
    line = _refused("train.py", "resume=latest", f"paths.log_dir={tmp_path}")
    assert line == f"train: error: resume=latest: no run with a last.ckpt in {tmp_path}"


def test_an_unwritable_run_folder_is_one_line(tiny_data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _refused("train.py", *tiny_overrides(tiny_data, blocker / "runs"))
    assert line.startswith(f"train: error: cannot write the run folder {blocker}/runs/")
    assert line.endswith(": Not a directory (see paths.log_dir)")


def test_missing_data_is_one_line_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from omegaconf import OmegaConf

    from mnistapp.cli.task import run_task
    from mnistapp.data.sources import DataSourceError

    def task(cfg: object) -> dict:
        raise DataSourceError("no Fashion-MNIST files in data/FashionMNIST/raw: apt-get install x")

    cfg = OmegaConf.create({"task_name": "train", "paths": {"output_dir": str(tmp_path)}})
    with pytest.raises(SystemExit) as exit_info:
        run_task(task, cfg, ())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "train: error: no Fashion-MNIST files in data/FashionMNIST/raw: apt-get install x"
    )
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("DataSourceError: no")
