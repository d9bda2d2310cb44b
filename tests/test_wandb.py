"""Weights & Biases: real tiny trainings in offline mode, read back from the files W&B wrote.

No test talks to a W&B server: runs are offline, and the "network is down" test points W&B at a
closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mnistapp.training import tracking
from tests.helpers import run_cli, tiny_overrides

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


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run's group, name, tags, config, history keys and summary from its ``.wandb`` file."""
    (path,) = run_dir.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "history": set(), "summary": {}, "artifacts": []}
    run["charts"], run["captions"] = {}, {}
    for record in read_records(path):
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


@pytest.fixture
def wandb_env(tmp_path: Path) -> dict[str, str]:
    """Keep W&B away from the developer's credentials, settings and caches."""
    home = tmp_path / "wandb_home"
    return {
        "WANDB_API_KEY": "",
        "NETRC": str(home / "netrc"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ERROR_REPORTING": "false",
    }


METRICS = ("train/loss", "train/acc", "train/f1", "val/loss", "val/acc", "val/f1", "val/f1_best")
TEST_METRICS = ("test/loss", "test/acc", "test/f1")


def test_offline_run_logs_config_metrics_media_and_model(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    run_cli(
        "train.py",
        "logger=wandb",
        *tiny_overrides(tiny_data, tmp_path),
        "logger.wandb.group=smoke",
        "tags=[tiny,test]",
        "logger.wandb.log_model=true",
        env=wandb_env,
    )
    (metrics_file,) = tmp_path.glob("*/*/metrics.json")
    out = metrics_file.parent
    # W&B files live in the run's output directory, not the repository root
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["group"] == "smoke" and run["tags"] == ["tiny", "test"]
    assert run["config"]["model"] == "lenet" and run["config"]["params_total"] == 44426
    assert run["config"]["config"]["model"]["_target_"] == "mnistapp.models.LeNet5"
    assert (
        run["config"]["provenance"]["torch"]
        == json.loads(metrics_file.read_text())["provenance"]["torch"]
    )
    assert set(METRICS + TEST_METRICS) <= run["history"]
    summary = run["summary"]
    assert all(key in summary for key in METRICS + TEST_METRICS), sorted(summary)
    assert summary["test/acc"] == pytest.approx(json.loads(metrics_file.read_text())["test/acc"])
    assert summary["output_dir"] == str(out.resolve())
    # W&B's own charts: an interactive confusion matrix and a per-class F1 bar chart, whose
    # tables hold exactly the test's numbers
    record = json.loads(metrics_file.read_text())
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
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = wandb_env | {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
        "WANDB_API_KEY": "0" * 40,  # looks logged in
    }
    proc = run_cli(
        "train.py",
        "logger=[csv,wandb]",
        *tiny_overrides(tiny_data, tmp_path),
        "logger.wandb.init_timeout=3",
        "trainer.max_epochs=1",
        env=env,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert "W&B: could not start the run (mode=online)" in output
    (metrics_file,) = tmp_path.glob("*/*/metrics.json")
    assert json.loads(metrics_file.read_text())["status"] == "ok"
    assert (metrics_file.parent / "csv" / "metrics.csv").read_text().startswith("epoch")
    # the metrics still reached W&B: in an offline run, to upload later with `wandb sync`
    (run_dir,) = (metrics_file.parent / "wandb").glob("offline-run-*")
    assert "test/acc" in read_run(run_dir)["summary"]
    assert "wandb sync" in output


def test_multirun_jobs_are_separate_runs_in_one_group(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    run_cli(
        "train.py",
        "-m",
        "logger=wandb",
        "seed=1,2",
        *tiny_overrides(tiny_data, tmp_path),
        "trainer.max_epochs=1",
        "test=false",
        env=wandb_env,
    )
    runs = [read_run(d) for d in sorted(tmp_path.glob("multirun/*/*/*/wandb/offline-run-*"))]
    assert len(runs) == 2
    assert runs[0]["id"] != runs[1]["id"]
    assert runs[0]["group"] == runs[1]["group"] != ""
    assert "seed=1" in runs[0]["name"] and "seed=2" in runs[1]["name"]
    assert all("val/f1" in run["summary"] for run in runs)


# --- the mode decision, without any network ---------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No W&B variables and an empty HOME; returns the netrc path W&B would read."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".netrc"


def test_mode_is_offline_without_credentials(clean_env: Path) -> None:
    assert not tracking.logged_in()
    assert tracking.resolve_mode() == "offline"
    assert tracking.resolve_mode("disabled") == "disabled"


def test_mode_is_online_with_an_api_key(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert tracking.resolve_mode() == "online"


def test_mode_is_online_after_wandb_login(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    # the server wandb itself would use (its default changed in 0.31): never hard-coded here
    host = urlsplit(wandb.Settings().base_url).netloc
    clean_env.write_text("machine example.org\n  login user\n  password secret\n")
    assert tracking.resolve_mode() == "offline"
    clean_env.write_text(f"machine {host}\n  login user\n  password " + "k" * 40 + "\n")
    assert tracking.resolve_mode() == "online"
    # a self-hosted server is looked up under its own host; NETRC moves the file
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert tracking.resolve_mode() == "offline"
    other = clean_env.with_name("netrc")
    other.write_text("machine wandb.example.org login user password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(other))
    assert tracking.resolve_mode() == "online"


def test_wandb_mode_always_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.resolve_mode("online") == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode() == "disabled"


def test_only_rank_zero_starts_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "is_rank_zero", lambda: False)
    assert tracking.wandb_logger() is None


def test_media_callback_is_a_no_op_without_a_wandb_logger() -> None:
    class Trainer:
        loggers: list[Any] = []
        is_global_zero = True

    tracking.WandbMedia().on_test_end(Trainer(), object())  # type: ignore[arg-type]


def test_a_wandb_failure_mid_run_is_one_warning(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    proc = run_cli(
        "train.py",
        "logger=many",  # csv + wandb
        *tiny_overrides(tiny_data, tmp_path),
        "trainer.max_epochs=3",
        "+callbacks.break_wandb._target_=tests.faults.BreakWandb",
        env=wandb_env,
    )
    output = proc.stdout + proc.stderr
    assert output.count("W&B logging is off for the rest of this run") == 1, output
    assert "W&B: log_metrics failed (ConnectionError: W&B went away)" in output
    (metrics_file,) = tmp_path.glob("*/*/metrics.json")
    record = json.loads(metrics_file.read_text())
    assert record["status"] == "ok" and record["epochs"] == 3
    # the CSV logger kept every epoch after W&B broke
    epochs = {row.split(",")[0] for row in (metrics_file.parent / "csv" / "metrics.csv").open()}
    assert {"0", "1", "2"} <= epochs


def test_a_resumed_run_continues_its_wandb_run(
    tiny_data: Path, tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    overrides = [*tiny_overrides(tiny_data, tmp_path), "logger=many", "plots.enabled=false"]
    run_cli("train.py", *overrides, "trainer.max_epochs=1", env=wandb_env)
    (first_metrics,) = tmp_path.glob("*/*/metrics.json")
    run_dir = first_metrics.parent
    run_cli("train.py", f"resume={run_dir}", "trainer.max_epochs=2", env=wandb_env)
    starts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(starts) == 2  # one W&B run, started twice: each start writes its own folder
    first, second = (read_run(path) for path in starts)
    assert first["id"] == second["id"] and first["id"]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
