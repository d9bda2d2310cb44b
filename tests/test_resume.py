"""Run folders are data: what a resume replays, which run and checkpoint it picks, and that it
never loses the run's record. In-process; the command-line resumes are in test_errors.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from mnistapp.cli.schema import Preflight
from mnistapp.cli.task import run_task
from mnistapp.cli.train import _latest_run, _main, expand_resume
from mnistapp.errors import CheckpointError, ConfigError
from tests.faults import KillAt
from tests.helpers import compose, tiny_overrides


class TermAt(KillAt):
    """``KillAt`` with SIGTERM (a cluster's time limit) instead of SIGKILL."""

    def _kill(self) -> None:
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGTERM)


def _fake_run(run_dir: Path, overrides: object, started: str | None = None) -> Path:
    """A run folder as Hydra leaves it, with a (junk) checkpoint and maybe a record."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
    text = overrides if isinstance(overrides, str) else yaml.safe_dump(overrides)
    (run_dir / ".hydra" / "overrides.yaml").write_text(text)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"junk")
    if started:
        (run_dir / "metrics.json").write_text(json.dumps({"status": "ok", "started": started}))
    return run_dir


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "runs" / "2026-01-01" / "10-00-00"))


def test_resume_refuses_another_run_and_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["train.py", f"resume={tmp_path}"])
    with pytest.raises(SystemExit) as exit_info:
        _main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"train: error: resume={tmp_path}: {tmp_path} is not a run folder with "
        "checkpoints/last.ckpt\n"
    )
    with pytest.raises(ConfigError) as err:
        expand_resume(["resume=latest", f"paths.log_dir={tmp_path}"])
    assert str(err.value) == f"resume=latest: no run with a last.ckpt in {tmp_path}"


@pytest.mark.parametrize(
    "planted",
    [
        "+callbacks.x._target_=numpy.savetxt",
        "~callbacks.lr_monitor",
        "hydra.searchpath=[file:///tmp]",
        "hydra/launcher=basic",
        "data.augment={_target_:os.system}",
        "callbacks.model_checkpoint._target_=builtins.exec",
        "model@x=mlp",
    ],
)
def test_resume_replays_only_values_of_known_settings(tmp_path: Path, planted: str) -> None:
    run_dir = _fake_run(tmp_path / "run", ["model=mlp", planted, "trainer.max_epochs=3"])
    with pytest.raises(ConfigError) as err:
        expand_resume([f"resume={run_dir}"])
    assert str(err.value) == (
        f"resume: {run_dir}/.hydra/overrides.yaml holds overrides a resume does not replay "
        f"(only values of known settings): {planted}"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [("[unclosed", "is not YAML (while parsing"), ("{a: 1}", "is not a list of overrides")],
)
def test_a_malformed_overrides_file_is_one_line(tmp_path: Path, text: str, problem: str) -> None:
    run_dir = _fake_run(tmp_path / "run", text)
    with pytest.raises(ConfigError) as err:
        expand_resume([f"resume={run_dir}"])
    assert str(err.value).startswith(f"resume: {run_dir}/.hydra/overrides.yaml {problem}")


def test_latest_is_the_run_that_started_last_by_its_record(tmp_path: Path) -> None:
    _fake_run(tmp_path / "2026-05-01" / "09-00-00", [], started="2026-05-01T09:00:00+00:00")
    newest = _fake_run(
        tmp_path / "2026-04-01" / "09-00-00", [], started="2026-06-01T09:00:00+00:00"
    )
    # a planted folder named to sort last, with a time to come
    _fake_run(tmp_path / "9999-12-31" / "23-59-59", [], started="9999-12-31T23:59:59+00:00")
    killed = _fake_run(tmp_path / "2026-03-01" / "09-00-00", [])  # no record: Hydra's config
    os.utime(killed / ".hydra" / "config.yaml", (1.7e9, 1.7e9))  # 2023-11
    assert _latest_run(tmp_path) == newest
    os.utime(killed / ".hydra" / "config.yaml", (2e9, 2e9))  # 2033-05: not yet, skipped too
    assert _latest_run(tmp_path) == newest


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(trained_run, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(b"truncated")
    (best,) = [p for p in run_dir.glob("checkpoints/*.ckpt") if p != last]
    os.utime(last)  # the newest file
    argv = expand_resume([f"resume={run_dir}"])
    assert argv[-2:] == [f"ckpt_path={best}", f"hydra.run.dir={run_dir}"]
    assert capsys.readouterr().err == (
        f"train: {last} is not a PyTorch checkpoint (neither zip nor pickle); "
        f"resuming from {best}\n"
    )
    best.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"no checkpoint of {run_dir} loads: "):
        expand_resume([f"resume={run_dir}"])


def test_two_resumes_of_one_run_do_not_race(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(trained_run, tmp_path)
    cfg = compose(f"hydra.run.dir={run_dir}", f"ckpt_path={run_dir}/checkpoints/last.ckpt")
    first = Preflight()
    first.on_run_start(cfg)  # holds the lock while it lives
    try:
        with pytest.raises(SystemExit) as exit_info:
            Preflight().on_run_start(cfg)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == (
            f"train: error: {run_dir} is being resumed by another process "
            f"(it holds {run_dir}/.lock)\n"
        )
    finally:
        os.close(first.lock)
    Preflight().on_run_start(cfg)  # released: the next resume goes on


def test_a_new_run_into_an_existing_run_folder_is_refused_untouched(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(trained_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    for ckpt in ("", f"ckpt_path={trained_run}/checkpoints/last.ckpt"):  # not its own: a new run
        cfg = compose(f"hydra.run.dir={run_dir}", *[ckpt] if ckpt else [])
        with pytest.raises(SystemExit) as exit_info:
            Preflight().on_run_start(cfg)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == (
            f"train: error: {run_dir} already holds a run, and a run never writes over another: "
            f"leave out hydra.run.dir (or resume={run_dir} to continue that run)\n"
        )
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_an_unwritable_run_folder_is_one_line(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        Preflight().on_run_start(compose(*tiny_overrides(tiny_data, blocker / "runs")))
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"train: error: cannot write the run folder {blocker}/runs/")
    assert line.endswith(": Not a directory (see paths.log_dir)")


def test_a_failed_resume_keeps_the_record_and_notes_the_try(
    trained_run: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(trained_run, tmp_path)
    earlier = json.loads((run_dir / "metrics.json").read_text())
    last = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose(*tiny_overrides(tiny_data, tmp_path), f"ckpt_path={last}", output_dir=run_dir)

    def broken(cfg: object) -> dict:
        raise CheckpointError(f"{last} does not fit")

    with pytest.raises(SystemExit) as exit_info:
        run_task(broken, cfg, ())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"train: error: {last} does not fit"
    record = json.loads((run_dir / "metrics.json").read_text())
    (resume,) = record.pop("resumes")
    assert record == earlier  # as it was: status ok, every figure
    assert resume["status"] == "failed" and resume["resumed_from"] == str(last)
    assert resume["error"] == f"CheckpointError: {last} does not fit"


def test_resuming_a_finished_run_loses_no_figure(
    trained_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    from mnistapp.cli.train import train

    run_dir = _copy(trained_run, tmp_path)
    earlier = json.loads((run_dir / "metrics.json").read_text())
    last = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose(*tiny_overrides(tiny_data, tmp_path), f"ckpt_path={last}", output_dir=run_dir)
    returned = run_task(train, cfg, ())  # max_epochs already reached: nothing to train
    assert "val/f1_best" not in returned  # this try's own result lacks the training figures
    record = json.loads((run_dir / "metrics.json").read_text())
    (resume,) = record.pop("resumes")
    assert record == earlier and record["val/f1_best"] > 0.1 and "train/loss" in record
    assert resume["status"] == "ok" and resume["resumed_from"] == str(last)


def test_a_resume_appends_to_the_runs_csv(
    trained_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    from mnistapp.cli.train import train

    run_dir = _copy(trained_run, tmp_path)
    history = run_dir / "csv" / "metrics.csv"
    earlier = history.read_text().splitlines()
    last = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose(
        *tiny_overrides(tiny_data, tmp_path),
        f"ckpt_path={last}",
        "trainer.max_epochs=3",
        output_dir=run_dir,
    )
    assert run_task(train, cfg, ())["epochs"] == 3
    rows = history.read_text().splitlines()
    # the two epochs trained before are kept, row for row; the third epoch follows
    assert rows[: len(earlier)] == earlier and len(rows) > len(earlier)
    epoch = rows[0].split(",").index("epoch")
    assert "2" in {row.split(",")[epoch] for row in rows[len(earlier) :]}
