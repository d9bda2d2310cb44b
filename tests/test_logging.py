"""Step curves to every logger, the CSV and curves.png whatever the loggers, TensorBoard hparams."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pytest

from tests.helpers import assert_png, compose, tiny_overrides


class LossRecorder(L.Callback):
    """Every training step's loss, as the module returned it (to check the logged means)."""

    losses: ClassVar[list[float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, *_: Any) -> None:
        LossRecorder.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def step_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 steps (2 epochs of 120 batches of 4) at log_every_n_steps=20, logger=tensorboard."""
    from mnistapp.cli.task import run_task
    from mnistapp.cli.train import train

    tmp_path = tmp_path_factory.mktemp("steps")
    run_dir = tmp_path / "run"
    cfg = compose(
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",
        "scheduler=onecycle",
        "logger=tensorboard",
        "data.val_size=120",
        "data.batch_size=4",
        "trainer.log_every_n_steps=20",
        "+callbacks.recorder._target_=tests.test_logging.LossRecorder",
        output_dir=run_dir,
    )
    LossRecorder.losses.clear()
    run_task(train, cfg, ())
    return run_dir


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_loss_and_learning_rate_every_n_steps_in_the_csv(step_run: Path) -> None:
    rows = _csv_rows(step_run)
    step_rows = [r for r in rows if r["train/loss"] and not r["train/f1"]]
    assert [int(r["step"]) for r in step_rows] == list(range(19, 240, 20))  # 12 points
    # each point is the mean of the 20 steps since the last one, not that step's loss alone
    losses = LossRecorder.losses
    assert len(losses) == 240
    for k, row in enumerate(step_rows):
        window = losses[20 * k : 20 * (k + 1)]
        assert float(row["train/loss"]) == pytest.approx(sum(window) / 20, rel=1e-5)
    # epoch figures stay once an epoch
    assert len([r for r in rows if r["train/f1"]]) == len([r for r in rows if r["val/f1"]]) == 2
    (lr_key,) = [k for k in rows[0] if k.startswith("lr-")]
    lrs = [(int(r["step"]), float(r[lr_key])) for r in rows if r[lr_key]]
    assert [s for s, _ in lrs] == list(range(19, 240, 20))
    values = [v for _, v in lrs]
    peak = values.index(max(values))  # one cycle: up, then down, no staircase
    assert 0 < peak < len(values) - 1 and len(set(values)) == len(values)


def test_the_same_step_curves_in_tensorboard_and_the_hparams_view(step_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    board = EventAccumulator(str(step_run / "tensorboard"))
    board.Reload()
    rows = _csv_rows(step_run)
    (lr_key,) = [k for k in rows[0] if k.startswith("lr-")]
    steps = {k: [e.step for e in board.Scalars(k)] for k in ("train/loss", lr_key)}
    assert len(steps[lr_key]) >= 10 and set(range(19, 240, 20)) <= set(steps["train/loss"])
    (test_acc,) = board.Scalars("test/acc")  # the hparams view does not repeat it here

    # the hparams view: this run's config against val/f1_best and test/acc
    metrics = json.loads((step_run / "metrics.json").read_text())
    hparams = EventAccumulator(str(step_run / "tensorboard" / "hparams"))
    hparams.Reload()
    for key in ("val/f1_best", "test/acc"):
        (point,) = hparams.Scalars(key)
        assert point.value == pytest.approx(metrics[key], abs=1e-6)
    assert test_acc.value == pytest.approx(metrics["test/acc"], abs=1e-6)
    content = hparams.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    config = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert config["model/_target_"].string_value.endswith("MLP")
    assert config["trainer/log_every_n_steps"].number_value == 20


def test_csv_and_curves_with_tensorboard_alone(step_run: Path) -> None:
    """logger=tensorboard keeps the CSV logger; curves.png is drawn from it, per step too."""
    assert (step_run / "csv" / "metrics.csv").is_file()
    assert_png(step_run / "curves.png")
