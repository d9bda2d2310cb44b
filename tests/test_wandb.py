"""Weights & Biases: real tiny trainings in offline mode, read back from the files W&B wrote.

No test talks to a W&B server: runs are offline, and the "network is down" test points W&B at a
closed port on 127.0.0.1. Trainings run in-process (``train(cfg)``); only the multirun test
needs the command line (Hydra's jobs sharing one process).
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnistapp.cli.train import expand_resume
from mnistapp.training import tracking
from tests.helpers import run_script, tiny_overrides, train_here

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log of 32 KiB blocks
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[Any]:
    """Yield the ``wandb_internal_pb2.Record`` messages of a ``run-<id>.wandb`` file."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, data[:7]
    pos, parts = 7, []
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def finished_records(path: Path, wait_s: float = 30) -> list[Any]:
    """The records of a ``.wandb`` file once it holds the run's exit record (or after ``wait_s``).

    W&B's service process writes the file, and under load it has been read unfinished after
    ``wandb.finish`` returned: once without its run record, once without its history."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            records = list(read_records(path))
        except DecodeError:  # a record half written
            records = []
        done = any(r.WhichOneof("record_type") == "exit" for r in records)
        if done or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run's group, name, tags, config, history keys and summary from its ``.wandb`` file."""
    (path,) = run_dir.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "history": set(), "summary": {}, "artifacts": []}
    run["charts"], run["captions"] = {}, {}
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, name=record.run.display_name)
            run.update(id=record.run.run_id, tags=list(record.run.tags), notes=record.run.notes)
        elif kind == "config":
            for u in record.config.update:
                if u.key:
                    run["config"][u.key] = json.loads(u.value_json)
                elif list(u.nested_key[:2]) == ["_wandb", "visualize"]:  # W&B's own charts
                    run["charts"][u.nested_key[2]] = json.loads(u.value_json)
        elif kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                run["history"].add(key)
                if key.endswith("/captions"):
                    run["captions"][key.removesuffix("/captions")] = json.loads(item.value_json)
        elif kind == "summary":
            for u in record.summary.update:
                run["summary"][u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "artifact":
            run["artifacts"].append((record.artifact.type, sorted(record.artifact.aliases)))
    return run


def _env(tmp_path: Path) -> dict[str, str]:
    """Keep W&B away from the developer's credentials, settings and caches, and offline."""
    home = tmp_path / "wandb_home"
    return {
        "WANDB_API_KEY": "",
        "NETRC": str(home / "netrc"),
        "WANDB_DIR": str(home / "dir"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ERROR_REPORTING": "false",
    }


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """:func:`_env` for this process (and for a subprocess); each test's W&B run finished."""
    env = _env(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    tracking.finish_runs()


METRICS = ("train/loss", "train/acc", "train/f1", "val/loss", "val/acc", "val/f1", "val/f1_best")
TEST_METRICS = ("test/loss", "test/acc", "test/f1")


def test_offline_run_logs_config_metrics_media_and_model(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    out = tmp_path / "run"
    train_here(
        "logger=wandb",
        *tiny_overrides(tiny_data, tmp_path),
        "logger.wandb.group=smoke",
        "tags=[tiny,test]",
        "logger.wandb.log_model=true",
        "logger.wandb.watch=all",
        "trainer.log_every_n_steps=5",
        output_dir=out,
    )
    metrics_file = out / "metrics.json"
    record = json.loads(metrics_file.read_text())
    # logger=wandb keeps the CSV logger on, and with it the curves
    assert (out / "csv" / "metrics.csv").read_text().startswith("epoch")
    assert (out / "curves.png").stat().st_size > 0
    # W&B files live in the run's output directory, not the repository root
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["group"] == "smoke" and run["tags"] == ["tiny", "test"]
    assert run["config"]["model"] == "lenet" and run["config"]["params_total"] == 44426
    assert run["config"]["config"]["model"]["_target_"] == "mnistapp.models.LeNet5"
    assert run["config"]["config"]["paths"]["output_dir"] == str(out)
    assert run["config"]["provenance"]["torch"] == record["provenance"]["torch"]
    assert set(METRICS + TEST_METRICS) <= run["history"]
    # watch=all: the gradients and parameters of the model's layers
    assert any(key.startswith("gradients/") for key in run["history"]), sorted(run["history"])
    assert any(key.startswith("parameters/") for key in run["history"])
    summary = run["summary"]
    assert all(key in summary for key in METRICS + TEST_METRICS), sorted(summary)
    assert summary["test/acc"] == pytest.approx(record["test/acc"])
    # W&B's own charts: an interactive confusion matrix and a per-class F1 bar chart, whose
    # tables hold exactly the test's numbers
    assert run["charts"]["test/confusion_matrix"]["panel_config"]["panelDefId"].startswith(
        "wandb/confusion_matrix"
    )
    assert run["charts"]["test/f1_per_class_chart"]["panel_config"]["panelDefId"].startswith(
        "wandb/bar"
    )
    media = run_dir / "files" / "media"
    (confusion,) = media.glob("table/test/confusion_matrix_table_*.table.json")
    cells = json.loads(confusion.read_text())["data"]
    assert [[int(t), int(p), n] for t, p, n in cells] == [
        [t, p, n] for t, row in enumerate(record["test/confusion"]) for p, n in enumerate(row)
    ]
    (f1_table,) = media.glob("table/test/f1_per_class_*.table.json")
    rows = json.loads(f1_table.read_text())["data"]
    assert [name for name, _ in rows] == [str(k) for k in range(10)]
    assert [f1 for _, f1 in rows] == pytest.approx(record["test/f1_per_class"])
    # every misclassified test image, captioned with its true and predicted class
    wrong = sum(
        n for t, row in enumerate(record["test/confusion"]) for p, n in enumerate(row) if t != p
    )
    captions = run["captions"]["test/misclassified"]
    assert len(captions) == min(wrong, 64) > 0
    assert len(list(media.glob("images/test/misclassified_*.png"))) == len(captions)
    for caption in captions:
        true, predicted = caption.removeprefix("true ").split(", predicted ")
        assert true != predicted and {true, predicted} <= {str(k) for k in range(10)}
    # log_model=true: the best checkpoint as a model artifact
    assert ("model", ["best", "latest"]) in run["artifacts"]


def test_unreachable_server_is_a_warning_not_a_failure(
    tiny_data: Path,
    tmp_path: Path,
    wandb_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # looks logged in
    out = tmp_path / "run"
    common = [*tiny_overrides(tiny_data, tmp_path), "trainer.max_epochs=1", "plots.enabled=false"]
    # offline unless asked: the server is never contacted
    train_here("logger=wandb", *common, output_dir=out)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert "test/acc" in read_run(run_dir)["summary"]
    # offline unless asked, so the server's failure cannot stop training: the record says ok
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"
    assert (out / "csv" / "metrics.csv").read_text().startswith("epoch")


def test_multirun_jobs_are_separate_runs_in_one_group(
    tiny_data: Path,
    tmp_path: Path,
    wandb_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_script(
        "train.py",
        "-m",
        "logger=wandb",
        "seed=1,2",
        *tiny_overrides(tiny_data, tmp_path),
        "trainer.max_epochs=1",
        "test=false",
        "plots.enabled=false",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    runs = [read_run(d) for d in sorted(tmp_path.glob("multirun/*/*/*/wandb/offline-run-*"))]
    assert len(runs) == 2
    assert runs[0]["id"] != runs[1]["id"]
    assert runs[0]["group"] == runs[1]["group"] != ""
    assert "seed=1" in runs[0]["name"] and "seed=2" in runs[1]["name"]
    assert all("val/f1" in run["summary"] for run in runs)


def test_media_callback_is_a_no_op_without_a_wandb_logger() -> None:
    class Trainer:
        loggers: list[Any] = []
        is_global_zero = True

    tracking.WandbMedia().on_test_end(Trainer(), object())  # type: ignore[arg-type]
    tracking.WandbMedia().on_fit_start(Trainer(), object())  # type: ignore[arg-type]


def test_a_wandb_failure_mid_run_is_one_warning(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        record = train_here(
            "logger=many",  # csv + wandb
            *tiny_overrides(tiny_data, tmp_path),
            "trainer.max_epochs=3",
            "plots.enabled=false",
            "+callbacks.break_wandb._target_=tests.faults.BreakWandb",
            output_dir=out,
        )
    assert caplog.text.count("W&B logging is off for the rest of this run") == 1, caplog.text
    assert "W&B: log_metrics failed (ConnectionError: W&B went away)" in caplog.text
    assert record["status"] == "ok" and record["epochs"] == 3
    # the CSV logger kept every epoch after W&B broke
    epochs = {row.split(",")[0] for row in (out / "csv" / "metrics.csv").open()}
    assert {"0", "1", "2"} <= epochs


def test_a_resumed_run_continues_its_wandb_run(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides(tiny_data, tmp_path), "logger=many", "plots.enabled=false"]
    train_here(*overrides, "trainer.max_epochs=1", output_dir=run_dir)
    # what Hydra writes into a run folder, and `resume=` replays
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))
    train_here(*expand_resume([f"resume={run_dir}", "trainer.max_epochs=2"]), output_dir=run_dir)
    starts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(starts) == 2  # one W&B run, started twice: each start writes its own folder
    first, second = (read_run(path) for path in starts)
    assert first["id"] == second["id"] and first["id"]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_a_run_that_cannot_start_wandb_goes_on(
    tiny_data: Path,
    tmp_path: Path,
    wandb_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Asked for online W&B whose server fails: one warning, and the run and its CSV are whole."""
    import wandb

    def unreachable(**kwargs: Any) -> None:
        raise wandb.errors.CommError("server unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        record = train_here(
            "logger=wandb",
            "logger.wandb.mode=online",
            *tiny_overrides(tiny_data, tmp_path),
            "trainer.max_epochs=1",
            output_dir=out,
        )
    assert record["status"] == "ok" and record["test/acc"] > 0.2
    assert caplog.text.count("W&B logging is off for the rest of this run") == 1, caplog.text
    assert "W&B: starting the run failed (CommError: server unreachable)" in caplog.text
    assert (out / "csv" / "metrics.csv").is_file() and (out / "curves.png").is_file()


def test_step_curves_reach_the_offline_run(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    """240 steps at log_every_n_steps=20: the loss and the learning rate every 20 steps."""
    out = tmp_path / "run"
    train_here(
        "logger=wandb",
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",
        "scheduler=onecycle",
        "data.val_size=120",
        "data.batch_size=4",
        "trainer.log_every_n_steps=20",
        "plots.enabled=false",
        output_dir=out,
    )
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    (path,) = run_dir.glob("run-*.wandb")
    rows = [
        {item.key or "/".join(item.nested_key) for item in record.history.item}
        for record in finished_records(path)
        if record.WhichOneof("record_type") == "history"
    ]
    # a step point holds train/loss without the epoch figures (train/f1)
    assert sum("train/loss" in row and "train/f1" not in row for row in rows) >= 10
    assert sum(any(key.startswith("lr-") for key in row) for row in rows) >= 10
