"""A user's mistake is one line and exit status 2: no traceback, no run folder left behind."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mnistapp.cli.schema import Preflight
from mnistapp.cli.task import hydra_error_message, run_task
from mnistapp.training.checkpoints import load_checkpoint
from tests.helpers import (
    ROOT,
    compose,
    resume_here,
    run_cli,
    run_module,
    run_script,
    tiny_overrides,
    train_here,
)

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
        ("seed=abc", "train: error: seed must be an integer in [0, 4294967296) (got 'abc')"),
        ("seed=4294967296", "train: error: seed must be an integer in [0, 4294967296) (got 42949"),
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
        (
            "channels_last=maybe",
            "train: error: channels_last must be one of [True, False] (got 'maybe')",
        ),
        ("compile=maybe", "train: error: compile must be one of [True, False] (got 'maybe')"),
        ("max_loss=0", "train: error: max_loss must be a finite number > 0 (got 0)"),
        ("trainer.accelerator=gpu", "train: error: trainer.accelerator=gpu needs a GPU"),
        (
            "scheduler=onecycle scheduler.max_lr=0",
            "train: error: scheduler.max_lr must be a finite number > 0 (got 0)",
        ),
        (
            "trainer=ddp_cpu trainer.devices=999",
            "train: error: trainer.devices=999: one process per device, and this machine has",
        ),
        # the schema owns these knobs: the model constructors no longer check them
        *[
            (f"model={m} model.width=0", "train: error: model.width must be an integer >= 1")
            for m in ("mlp", "lenet", "cnn", "fast_cnn", "baseline_cnn", "conv_10k", "separable")
        ],
        *[
            (f"model={m} model.width=0", "train: error: model.width must be an integer >= 1")
            for m in ("inception", "pareto")
        ],
        ("model=mlp model.depth=0", "train: error: model.depth must be an integer >= 1 (got 0)"),
        ("model=mlp model.dropout=1.0", "train: error: model.dropout must be a finite number in"),
        (
            "model=baseline_cnn model.depth=0",
            "train: error: model.depth must be an integer >= 1 (got 0)",
        ),
        (
            "model=baseline_cnn model.pointwise=-2",
            "train: error: model.pointwise must be an integer >= 0 (got -2)",
        ),
        (
            "model=baseline_cnn model.growth=0",
            "train: error: model.growth must be a finite number > 0 (got 0)",
        ),
    ],
)
def test_bad_values_are_refused_before_the_run_folder(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    if "gpu" in override:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    cfg = compose(*tiny_overrides(tiny_data, tmp_path), *override.split())
    with pytest.raises(SystemExit) as exit_info:
        Preflight().on_run_start(cfg)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(message), line
    assert list(tmp_path.iterdir()) == []  # no run folder at all


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model=baseline_cnn model.depth=9",
            "train: error: model: BaselineCNN with image_size=28, depth=9",
        ),
        ("ckpt_path=/nowhere.ckpt", "train: error: no checkpoint file at /nowhere.ckpt"),
        (
            "model=pareto model.padding=full",
            "train: error: model: padding must be one of ['same', 'valid'], got 'full'",
        ),
        ("model=pareto model.pools=-1", "train: error: model: pools must be an integer >= 0"),
        (
            "data.augment={shear:3}",
            "train: error: data: data.augment.shear is not a setting; data.augment takes degrees,",
        ),
        # Lightning's own refusals, as one line
        ("trainer.precision=17", "train: error: trainer: Precision 17 is invalid. Allowed"),
        (
            "trainer.devices=0",
            "train: error: trainer: `Trainer(devices=0)` value is not a valid input using cpu",
        ),
        (
            "model=mlp +trainer.limit_val_batches=0.1",  # a tenth of one batch
            "train: error: trainer: You requested to check 0.1 of the `val_dataloader` but 0.1",
        ),
    ],
)
def test_values_refused_while_building_are_one_line_and_leave_no_folder(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    from mnistapp.cli.train import train

    run_dir = tmp_path / "logs" / "run"
    cfg = compose(
        *tiny_overrides(tiny_data, tmp_path / "logs"), *override.split(), output_dir=run_dir
    )
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, cfg, ())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)
    # nothing that looks like a run: no record; the folder is gone unless the loggers wrote in it
    assert list(tmp_path.rglob("metrics.json")) == [] or "limit_val" in override
    assert not run_dir.exists() or "limit_val" in override


def test_a_checkpoint_of_another_architecture_is_one_line(
    trained_run: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnistapp.cli.train import train

    ckpt = trained_run / "checkpoints" / "last.ckpt"  # a LeNet
    cfg = compose(
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",
        f"ckpt_path={ckpt}",
        output_dir=tmp_path / "run",
    )
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, cfg, ())
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"train: error: {ckpt} holds a LeNet5, not the requested MLP "
        "(leave out model= to use the checkpoint's)"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model=nonexistent",
            "train: error: model=nonexistent is not an option; model is one of: baseline_cnn,",
        ),
        ("model=lenett", "train: error: model=lenett is not an option (did you mean lenet?)"),
        ("model.widht=3", "train: error: model.widht is not a setting (did you mean width?)"),
    ],
)
def test_hydra_errors_are_one_line(override: str, message: str) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose(override)
    assert f"train: error: {hydra_error_message(err.value)}".startswith(message)


def test_the_command_line_answers_a_bad_value_without_torch(tmp_path: Path) -> None:
    """The one line of a bad value comes before torch or Lightning is imported (< 2 s)."""
    code = (
        "import atexit, runpy, sys;"
        "atexit.register(lambda: print(sorted({'torch', 'lightning'} & set(sys.modules))));"
        f"sys.argv = ['train.py', 'model.width=-1', 'paths.log_dir={tmp_path}'];"
        "runpy.run_path('train.py', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **NO_DEVELOPER},
    )
    assert proc.returncode == 2 and proc.stdout.strip() == "[]", proc.stdout
    assert proc.stderr.strip() == "train: error: model.width must be an integer >= 1 (got -1)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=(", "train: error: Error parsing override 'optimizer.lr=('"),
        ("model.width=" + "9" * 5000, "train: error: a number on the command line is too long"),
        ("model=lenett", "train: error: model=lenett is not an option (did you mean lenet?)"),
    ],
    ids=["parse", "5000-digits", "option"],
)
def test_bad_command_lines_are_one_line(tmp_path: Path, override: str, message: str) -> None:
    line = _refused("train.py", f"paths.log_dir={tmp_path}", override)
    assert line.startswith(message), line
    assert list(tmp_path.iterdir()) == []


def test_a_bad_search_storage_is_one_line(tmp_path: Path) -> None:
    line = _refused(
        "train.py", f"paths.log_dir={tmp_path}", "hparams_search=optuna", "tune.storage=foo://bar"
    )
    assert line.startswith("train: error: tune.storage=foo://bar cannot be opened: "), line


def test_ddp_with_too_few_validation_batches_is_one_line(tiny_data: Path, tmp_path: Path) -> None:
    """debug=limit keeps 0.2 of the one validation batch of the tiny data, which Lightning refuses:
    under DDP too that is one line, not a traceback from each rank."""
    line = _refused(
        "train.py", *tiny_overrides(tiny_data, tmp_path), "model=mlp", "trainer=ddp_cpu",
        "debug=limit",
    )  # fmt: skip
    assert line.startswith("train: error: trainer: You requested to check 0.2 of the"), line


def test_compile_where_torch_compile_cannot_run_is_one_line(
    tiny_data: Path, tmp_path: Path
) -> None:
    """No C++ compiler for the CPU backend: stopped before the first step, in one line."""
    proc = run_cli(
        "train.py", *tiny_overrides(tiny_data, tmp_path), "model=mlp", "compile=true",
        check=False, env={**NO_DEVELOPER, "CXX": "/nonexistent/g++"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("train: ")]
    assert line.startswith("train: error: compile=true: torch.compile cannot run here: "), line
    assert "Traceback" not in proc.stderr and "C++ compiler" in line
    (metrics,) = tmp_path.glob("*/*/metrics.json")  # the run had started: it is recorded
    record = json.loads(metrics.read_text())
    assert record["status"] == "failed"
    assert record["error"].endswith(line.removeprefix("train: error: "))


def test_developers_still_get_everything(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train.py", *tiny_overrides(tiny_data, tmp_path), "model=nonexistent", check=False
    )  # HYDRA_FULL_ERROR=1, as the test runner sets it
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "MissingConfigException" in proc.stderr


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        (
            "eval",
            ["data.eval_batch_size=0"],
            "eval: error: data.eval_batch_size must be an integer >= 1 (got 0)",
        ),
        (
            "eval",
            ["trainer=nope"],
            "eval: error: trainer=nope is not an option; trainer is one of:",
        ),
        ("eval", ["ckpt_path=/nowhere.ckpt"], "eval: error: no checkpoint file at /nowhere.ckpt"),
        (
            "export",
            ["format=tflite"],
            "export: error: format must be one of ['onnx', 'torchscript'] (got 'tflite')",
        ),
        (
            "export",
            ["tolerance=-1"],
            "export: error: tolerance must be a finite number > 0 (got -1)",
        ),
        ("predict", ["batch_size=0"], "predict: error: batch_size must be an integer >= 1 (got 0)"),
        (
            "predict",
            ["ckpt_path=/nowhere.ckpt", "inputs=x.png"],
            "predict: error: no checkpoint file at /nowhere.ckpt",
        ),
    ],
)
def test_bad_eval_export_and_predict_values_are_one_line(
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: str,
    args: list[str],
    message: str,
) -> None:
    from hydra.errors import ConfigCompositionException

    from mnistapp.cli.task import run_on_checkpoint

    run_dir = tmp_path / config / "run"
    overrides = [f"paths.data_dir={tiny_data}", f"paths.log_dir={tmp_path}", *args]
    overrides.append(f"hydra.run.dir={run_dir}")
    try:
        cfg = compose(*overrides, config_name=config)
    except ConfigCompositionException as err:
        line = f"{config}: error: {hydra_error_message(err)}"
    else:
        with pytest.raises(SystemExit) as exit_info:
            Preflight().on_run_start(cfg)  # the values, then the run folder is made
            cfg = compose(*overrides, config_name=config, output_dir=run_dir)
            run_on_checkpoint(config, lambda cfg, restored: {}, cfg, ())  # the checkpoint
        assert exit_info.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(message), line
    assert list(tmp_path.iterdir()) == []  # no record, and no empty run folder left behind


def test_a_refused_eval_is_one_line_and_leaves_no_folder(tiny_data: Path, tmp_path: Path) -> None:
    """A missing checkpoint is answered by the schema, before torch is imported (in ~0.5 s)."""
    argv = ["eval.py", f"paths.data_dir={tiny_data}", f"paths.log_dir={tmp_path}"]
    code = (
        f"import runpy, sys; sys.argv = {[*argv, 'ckpt_path=/nowhere.ckpt']!r}\n"
        "try:\n    runpy.run_path('eval.py', run_name='__main__')\n"
        "finally:\n    print('torch imported:', 'torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **NO_DEVELOPER},
    )  # fmt: skip
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == ["eval: error: no checkpoint file at /nowhere.ckpt"]
    assert proc.stdout.strip() == "torch imported: False"
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_run_stops_with_epoch_step_and_loss(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = (*tiny_overrides(tiny_data, tmp_path), "model=mlp", "optimizer.lr=1e9")
    with pytest.raises(SystemExit) as exit_info:
        train_here(*overrides, output_dir=tmp_path / "run")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # after Lightning's own warnings
    assert re.fullmatch(
        r"train: training diverged at epoch 0, step \d+: loss \S+ \(non-finite or above "
        r"max_loss=1000\); try a lower optimizer.lr",
        line,
    ), line
    metrics = tmp_path / "run" / "metrics.json"
    record = json.loads(metrics.read_text())
    assert record["status"] == "diverged" and record["error"] in line
    assert not list(metrics.parent.glob("checkpoints/*.ckpt"))  # stopped before any checkpoint


def test_a_diverging_job_is_marked_and_the_sweep_goes_on(
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit) as stopped:  # in this process: the exit status 1 it gives
        run_script(
            "train.py",
            "-m",
            *tiny_overrides(tiny_data, tmp_path),
            "model=mlp",
            "trainer.max_epochs=1",
            "plots.enabled=false",
            "optimizer.lr=1e9,0.05",
            capsys=capsys,
            monkeypatch=monkeypatch,
        )
    assert "1 of 2 jobs failed" in str(stopped.value.code)  # a job did not finish well
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
    if signum == signal.SIGTERM:  # the printed command, as a user types it
        _, script, *args = record["resume"].split()
        run_cli(script, *args, f"trainer.max_epochs={epoch + 2}")
    else:  # the same resume, in this process: once through the command line is enough
        resume_here(metrics.parent, f"trainer.max_epochs={epoch + 2}")
    resumed = json.loads(metrics.read_text())
    assert resumed["status"] == "ok" and resumed["epochs"] == epoch + 2


def _resumable(tiny_data: Path, log_dir: Path) -> list[str]:
    """The run the killed-run tests kill, resume and compare."""
    return [
        *tiny_overrides(tiny_data, log_dir),
        "model=mlp",
        "model.dropout=0.2",  # random draws every step: the RNG state must come back too
        "trainer.max_epochs=4",
        "trainer.deterministic=true",
        "plots.enabled=false",
    ]


@pytest.fixture(scope="module")
def whole_run(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[tuple[str, ...]], Path]:
    """The uninterrupted run a killed one must end like, by its checkpoint overrides (its
    metrics.json): trained once per module, in this process, for the tests that share it."""
    runs: dict[tuple[str, ...], Path] = {}

    def whole(steps: tuple[str, ...]) -> Path:
        if steps not in runs:
            log_dir = tmp_path_factory.mktemp("whole")
            train_here(*_resumable(tiny_data, log_dir), *steps, output_dir=log_dir / "run")
            runs[steps] = log_dir / "run" / "metrics.json"
        return runs[steps]

    return whole


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
        # SIGTERM mid-epoch: Lightning stops at the step boundary, the interrupt checkpoint
        # is that step's (tests.test_resume.TermAt sends it)
        (
            [
                "+callbacks.killer.step=23",
                "callbacks.last_checkpoint.every_n_train_steps=5",
                "+callbacks.killer.signum=15",
            ],
            None,
        ),
    ],
    ids=["after-an-epoch", "mid-epoch", "sigterm-mid-epoch"],
)
def test_a_killed_run_resumes_in_its_folder_to_the_same_result(
    tiny_data: Path,
    tmp_path: Path,
    whole_run: Callable[[tuple[str, ...]], Path],
    when: list[str],
    saved: tuple[str, int] | None,
) -> None:
    # checkpoints do not change training: one uninterrupted run per checkpoint schedule
    whole = whole_run(tuple(o for o in when if "every_n_train_steps" in o))

    marker = tmp_path / "killed-once"
    sigterm = "+callbacks.killer.signum=15" in when
    killer = "tests.test_resume.TermAt" if sigterm else "tests.faults.KillAt"
    proc = run_cli(
        "train.py",
        *_resumable(tiny_data, tmp_path / "killed"),
        f"+callbacks.killer._target_={killer}",
        f"+callbacks.killer.marker={marker}",
        *[o for o in when if "signum" not in o],
        check=False,
    )
    assert marker.exists()
    assert proc.returncode == (128 + signal.SIGTERM if sigterm else -signal.SIGKILL), proc.stderr
    (run_dir,) = (tmp_path / "killed").glob("*/*")
    if saved:
        assert not (run_dir / "metrics.json").exists()  # killed: nothing was recorded
        key, value = saved
        assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")[key] == value
    # a resume replays no `+`-added node (test_resume): the fault goes, as a user would drop it
    saved_overrides = run_dir / ".hydra" / "overrides.yaml"
    kept = [o for o in yaml.safe_load(saved_overrides.read_text()) if "killer" not in o]
    saved_overrides.write_text(yaml.safe_dump(kept))

    # `resume=<run dir>` in this process (the command line's resume: the stopped-run test)
    resume_here(run_dir)
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
