"""The benchmarks run end to end on tiny inputs and report what they measured: each script as
``__main__`` in the test's process (``helpers.run_script``), which has torch imported already."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import run_script, write_idx_dataset

PIPELINES = ("hand", "app", "app_nometrics", "torchvision")


def test_overhead_benchmark_times_every_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = write_idx_dataset(tmp_path / "data")
    out = tmp_path / "out"
    overrides = [
        "data.download=false",
        "data.verify=false",
        "data.val_size=100",
        "data.eval_batch_size=50",
    ]
    stdout = run_script(
        "benchmarks/overhead.py",
        *("--models", "mlp", "--batch-sizes", "32", "--steps", "5", "--repeats", "2"),
        *("--device", "cpu", "--data-dir", str(data_dir), "--out", str(out)),
        *(arg for o in overrides for arg in ("--override", o)),
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    report = json.loads((out / "overhead.json").read_text())
    assert report["settings"]["overrides"] == overrides
    (result,) = report["results"]
    assert (result["model"], result["batch_size"], result["steps"]) == ("mlp", 32, 5)

    for name in PIPELINES:
        reps = result["runs"][name]
        assert len(reps) == 2, name
        for rep in reps:
            assert rep["train_ms_per_step"] > 0 and rep["val_ms"] > 0, (name, rep)
        median = result["median"][name]
        for key in ("train_ms_per_step", "val_ms"):
            low, high = sorted(r[key] for r in reps)
            assert math.isclose(median[key], (low + high) / 2), (name, key)

    hand = result["median"]["hand"]["train_ms_per_step"]
    for name in PIPELINES[1:]:
        expected = result["median"][name]["train_ms_per_step"] / hand
        assert math.isclose(result["ratios"][f"{name}/hand"], expected), name

    breakdown = result["breakdown"]
    assert breakdown["profiled_train_ms_per_step"] > 0
    assert math.isclose(
        breakdown["metrics_ms_per_step"],
        result["median"]["app"]["train_ms_per_step"]
        - result["median"]["app_nometrics"]["train_ms_per_step"],
    )
    actions = breakdown["actions"]
    # Lightning's per-step actions, once per training step of the timed epoch
    for action in ("run_training_batch", "[_TrainingEpochLoop].train_dataloader_next"):
        assert actions[action]["calls_per_step"] == 1.0, action
        assert actions[action]["ms_per_step"] > 0, action
    step = next(a for a in actions if a.endswith("Classifier.optimizer_step"))
    assert actions[step]["ms_per_step"] <= actions["run_training_batch"]["ms_per_step"]
    # the app's callbacks are profiled hook by hook, the progress bar among them
    bar = next(a for a in actions if a.startswith("[Callback]") and "Progress" in a)
    assert actions[bar.rsplit(".", 1)[0] + ".on_train_batch_end"]["calls_per_step"] == 1.0
    assert "(exclusive) step outside run_training_batch" in actions

    markdown = (out / "overhead.md").read_text()
    assert "| mlp | 32 | 5 |" in markdown and "run_training_batch" in markdown
    assert "| mlp | 32 | 5 |" in stdout


def test_memory_format_benchmark_times_every_variant(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = run_script(
        "benchmarks/memory_format.py",
        *("--models", "lenet,pareto", "--batch-size", "8", "--steps", "2", "--repeats", "2"),
        *("--device", "cpu"),
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[0].split(" | ")[1:] == ["nchw fp32", "nhwc fp32", "nchw bf16", "nhwc bf16 |"]
    for model, row in zip(("lenet", "pareto"), rows[1:], strict=True):
        cells = row.strip("| ").split(" | ")
        assert cells[0] == model
        times = [float(cell.split(" ms")[0]) for cell in cells[1:]]
        assert len(times) == 4 and all(t > 0 for t in times)
        assert cells[1].endswith("(1.00x)")  # the baseline's ratio to itself
