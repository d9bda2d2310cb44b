"""What Lightning-Hydra template users reach for: a W&B sweep file, MLflow, the profiler, MPS."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, compose, run_cli, tiny_overrides

SWEEP_FILE = ROOT / "sweeps" / "wandb.yaml"


def agent_command(sweep: dict, values: dict) -> list[str]:
    """The command line `wandb agent` runs for one set of ``values``, built by wandb's own code.

    The agent expands each ``${macro}`` item of the sweep's ``command`` from
    ``create_sweep_command_args`` (wandb/wandb_agent.py, ``Agent._command_run``).
    """
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    macros = sweep_utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in values.items()}}
    )
    macros |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [sweep["program"]]}
    command = sweep_utils.create_sweep_command(list(sweep["command"]))
    return list(
        itertools.chain.from_iterable(
            macros.get(c[2:-1], []) if c.startswith("${") else [c] for c in map(str, command)
        )
    )


def test_wandb_sweep_runs_train_py_with_hydra_overrides() -> None:
    sweep = yaml.safe_load(SWEEP_FILE.read_text())
    assert sweep["metric"] == {"name": "val/f1_best", "goal": "maximize"}
    values = {"model.width": 64, "optimizer.lr": 0.0123, "data.batch_size": 128}
    command = agent_command(sweep, values)
    assert command[:3] == ["/usr/bin/env", "python", "train.py"]
    assert (ROOT / command[2]).is_file()
    cfg = compose(*command[3:])  # the agent's arguments, exactly as train.py receives them
    assert cfg.model.width == 64 and cfg.optimizer.lr == pytest.approx(0.0123)
    assert cfg.data.batch_size == 128 and "wandb" in cfg.logger
    for name in sweep["parameters"]:  # every swept key is a setting of the composed config
        node = cfg
        for part in name.split("."):
            node = node[part]


def test_mlflow_logger_records_the_run_offline(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlflow", reason="the optional extra: pip install -e '.[mlflow]'")
    import mlflow

    from mnistapp.cli.train import train

    log_dir = tmp_path / "out"
    cfg = compose(
        *tiny_overrides(tiny_data, log_dir),
        "logger=mlflow",
        "debug=profiler",
        "trainer.max_epochs=1",
        "tags=[smoke,mlflow]",
        "extras.print_config=true",
        output_dir=log_dir / "run",
    )
    record = train(cfg)
    tree = capsys.readouterr().out  # the composed config as a tree, before training
    assert tree.startswith("config\n") and "├── model" in tree and "_target_: " in tree
    assert record["test/acc"] > 0.2  # 10 classes: chance is 0.1
    client = mlflow.MlflowClient(f"sqlite:///{log_dir}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "mnistapp"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["tags"] == "smoke,mlflow"
    assert {"val/f1", "test/acc"} <= set(run.data.metrics)
    # the profiler's reports, and the CSV beside MLflow
    assert "Profiler Report" in (log_dir / "run" / "fit-profiler.txt").read_text()
    assert (log_dir / "run" / "csv" / "metrics.csv").is_file()


def test_trainer_mps_composes() -> None:
    cfg = compose("trainer=mps")
    assert cfg.trainer.accelerator == "mps" and cfg.trainer.devices == 1


def test_a_default_run_prints_only_our_lines_and_lightnings_progress(
    tiny_data: Path, tmp_path: Path
) -> None:
    """The harmless Lightning messages (cli/task.py) are silenced, and only those."""
    from mnistapp.cli.task import HARMLESS_LOGS, HARMLESS_WARNINGS

    proc = run_cli("train.py", *tiny_overrides(tiny_data, tmp_path), "trainer.max_epochs=1")
    output = proc.stdout + proc.stderr
    assert "train result" in output and "Trainer.fit` stopped" in output
    for message in (*HARMLESS_WARNINGS, *HARMLESS_LOGS):
        assert message not in output
