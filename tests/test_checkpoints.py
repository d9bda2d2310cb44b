"""Checkpoints under faults: a full disk, SIGKILL mid-write, Ctrl-C or SIGTERM while fitting.

The disk-full and SIGKILL cases run on a small tmpfs, as the run folder or as ``$TMPDIR`` (Debian
and Fedora mount ``/tmp`` so); they are skipped where mounting is not allowed.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import TorchCheckpointIO

from mnistapp.files import atomic_open
from mnistapp.training.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    load_checkpoint,
    newest_loadable,
)
from tests.helpers import compose, tiny_overrides


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 KB tmpfs, unmounted afterwards (skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _checkpoint(value: int, size: int) -> dict:
    return {"state_dict": {"w": torch.full((size,), float(value))}, "value": value}


def _holds_one_write(path: Path) -> int:
    """The value of the whole checkpoint at ``path``: it loads and every weight agrees."""
    checkpoint = load_checkpoint(path)
    assert torch.all(checkpoint["state_dict"]["w"] == checkpoint["value"])
    return checkpoint["value"]


@pytest.mark.parametrize("tmpdir_elsewhere", [False, True], ids=["same-fs", "TMPDIR-elsewhere"])
def test_a_full_disk_keeps_the_previous_checkpoint(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpdir_elsewhere: bool
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path if tmpdir_elsewhere else small_disk))
    last = small_disk / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1, 1000), last)
    # torch reports the full disk as OSError, or as RuntimeError when closing its zip writer
    with pytest.raises((OSError, RuntimeError)) as err:
        AtomicCheckpointIO().save_checkpoint(_checkpoint(2, 100_000), last)  # 400 KB
    cause = err.value if isinstance(err.value, OSError) else err.value.__context__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    assert _holds_one_write(last) == 1
    assert [p.name for p in small_disk.iterdir()] == ["last.ckpt"]  # no temp file left


def test_ctrl_c_inside_torch_save_is_an_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt raised by a write inside torch.save reaches Lightning as one (torch's
    zip writer then fails closing, and its RuntimeError made the run a crash, not interrupted)."""
    import io
    from contextlib import contextmanager

    from mnistapp.training import checkpoints

    class InterruptedFile(io.RawIOBase):
        def __init__(self, f: Any) -> None:
            self.f, self.writes = f, 0

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.writes += 1
            if self.writes == 3:  # Ctrl-C's handler raises while a tensor is being written
                raise KeyboardInterrupt
            return self.f.write(data)

    @contextmanager
    def interrupted_open(path: Path) -> Iterator[Any]:
        with atomic_open(path) as f:
            yield InterruptedFile(f)

    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1, 1000), last)
    monkeypatch.setattr(checkpoints, "atomic_open", interrupted_open)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint(_checkpoint(2, 100_000), last)
    assert _holds_one_write(last) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_lightnings_own_save_truncates_across_filesystems(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why AtomicCheckpointIO exists: Lightning stages in $TMPDIR and copies into place."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    last = small_disk / "last.ckpt"
    TorchCheckpointIO().save_checkpoint(_checkpoint(1, 1000), last)
    with pytest.raises(OSError):
        TorchCheckpointIO().save_checkpoint(_checkpoint(2, 100_000), last)
    with pytest.raises(CheckpointError):  # the good checkpoint is gone, half a new one instead
        load_checkpoint(last)


@pytest.mark.parametrize("tmpdir_elsewhere", [False, True], ids=["same-fs", "TMPDIR-on-tmpfs"])
def test_sigkill_during_checkpoint_writes_never_leaves_a_corrupt_file(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpdir_elsewhere: bool
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk if tmpdir_elsewhere else tmp_path))
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(0, 10), last)
    rng = random.Random(0)
    for _ in range(5):
        pid = os.fork()
        if pid == 0:  # the child writes 8 MB checkpoints for ever, until killed
            try:
                for value in range(1, 1_000_000):
                    AtomicCheckpointIO().save_checkpoint(_checkpoint(value, 2_000_000), last)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.05, 1.0))
        os.kill(pid, signal.SIGKILL)
        assert os.waitpid(pid, 0)[1] == signal.SIGKILL
        _holds_one_write(last)  # the previous whole checkpoint or the new one, never half
        assert [p.name for p in folder.glob("*.ckpt")] == ["last.ckpt"]


def test_newest_loadable_skips_a_broken_checkpoint(tmp_path: Path) -> None:
    older, newer = tmp_path / "epoch_000.ckpt", tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1, 10), older)
    newer.write_bytes(older.read_bytes()[:100])  # truncated
    os.utime(older, (1, 1))
    path, problems = newest_loadable(tmp_path)
    assert path == older and load_checkpoint(path)["value"] == 1
    assert len(problems) == 1 and problems[0].startswith(f"{newer} is not a PyTorch checkpoint")
    older.write_bytes(b"not a checkpoint")
    path, problems = newest_loadable(tmp_path)
    assert path is None and len(problems) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello", "is not a PyTorch checkpoint (neither zip nor pickle)"),
        (None, "is not a PyTorch checkpoint ("),  # torch says OSError or RuntimeError
    ],
    ids=["not-a-checkpoint", "truncated"],
)
def test_a_bad_checkpoint_is_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1, 1000), path)
    path.write_bytes(content if content is not None else path.read_bytes()[:-200])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "\n" not in str(err.value)


# --- Ctrl-C, SIGTERM and failures while fitting (in-process) ------------------------------------


class _Raise(Callback):
    """Raise ``exception`` (or, for "sigterm", flag a SIGTERM as Lightning's handler does) before
    global step ``step``."""

    def __init__(self, step: int, exception: BaseException | str) -> None:
        self.step, self.exception = step, exception

    def on_train_batch_start(self, trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            if self.exception == "sigterm":  # Lightning's handler flags it for the loop
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise self.exception


def _fit(tiny_data: Path, tmp_path: Path, *callbacks: Callback) -> Path:
    """Fit a tiny MLP for 3 epochs with the app's callbacks (plus ``callbacks``); return the
    checkpoint folder. Lightning's Ctrl-C handling ignores SIGINT afterwards: restored here."""
    from mnistapp.cli.train import build

    cfg = compose(
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",
        "trainer.max_epochs=3",
        "plots.enabled=false",
        output_dir=tmp_path / "run",
    )
    run = build(cfg)
    run.trainer.callbacks.extend(callbacks)
    try:
        run.trainer.fit(run.module, datamodule=run.datamodule)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return tmp_path / "run" / "checkpoints"


def test_ctrl_c_inside_a_checkpoint_write_still_saves_it(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = AtomicCheckpointIO.save_checkpoint

    def interrupted_once(self, checkpoint, path, storage_options=None) -> None:
        if Path(path).name == "epoch_000.ckpt" and not (tmp_path / "fired").exists():
            (tmp_path / "fired").touch()
            with atomic_open(Path(path)) as f:
                f.write(b"half a checkpoint")
                raise KeyboardInterrupt
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", interrupted_once)
    with pytest.raises(SystemExit):  # Lightning ends a Ctrl-C with sys.exit(1)
        _fit(tiny_data, tmp_path)
    folder = tmp_path / "run" / "checkpoints"
    last = load_checkpoint(folder / "last.ckpt")
    (state,) = (v for k, v in last["callbacks"].items() if "'monitor': 'val/f1'" in k)
    # last.ckpt names the best checkpoint whose write was interrupted, and it is whole now
    assert Path(state["best_model_path"]) == folder / "epoch_000.ckpt"
    assert load_checkpoint(folder / "epoch_000.ckpt")["epoch"] == last["epoch"] == 0
    assert not list(folder.glob(".*.tmp"))


def test_sigterm_saves_last_ckpt_at_the_step_it_stopped(tiny_data: Path, tmp_path: Path) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    with pytest.raises(SIGTERMException):
        _fit(tiny_data, tmp_path, _Raise(25, "sigterm"))
    folder = tmp_path / "run" / "checkpoints"
    last = load_checkpoint(folder / "last.ckpt")
    assert last["global_step"] == 26 and last["epoch"] == 1  # 16 steps an epoch


def test_a_failed_run_saves_no_interrupt_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        _fit(tiny_data, tmp_path, _Raise(3, RuntimeError("boom")))
    assert not list((tmp_path / "run" / "checkpoints").glob("*"))
