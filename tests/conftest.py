"""Shared fixtures: tiny MNIST files, one trained run, and a guard that the machine is unchanged."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

# One torch thread per process, set before anything imports torch: the xdist workers and every
# command a test starts inherit it. Two threads per process on 2 shared cores spent their time
# waiting on each other (a tiny MLP's backward 55 ms a step); the suite's CPU time fell ~40%.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.helpers import run_cli, tiny_overrides, write_idx_dataset


@pytest.fixture(scope="session", autouse=True)
def machine_left_as_found() -> Iterator[None]:
    """Fail the run loudly if any test replaced /dev/null (as root, a rename over it succeeds)."""
    yield
    mode = os.stat("/dev/null").st_mode
    assert stat.S_ISCHR(mode), (
        "/dev/null is no longer a character device: a test replaced it. As root, restore it "
        "with: rm /dev/null && mknod -m 666 /dev/null c 1 3"
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with 600 train / 200 test synthetic digits in real IDX files."""
    return write_idx_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny LeNet run (2 epochs, figures on), shared by the eval/predict/export/resume tests:
    through the command line, so its folder is a real Hydra run folder (``.hydra/``). Its
    stdout is kept beside the run folder's parent, in ``<log_dir>/stdout.txt``
    (test_lenet_sgd_trains_tests_and_writes_its_files reads it)."""
    log_dir = tmp_path_factory.mktemp("train")
    # lenet and sgd are the defaults: named as a user names them
    proc = run_cli("train.py", "model=lenet", "optimizer=sgd", *tiny_overrides(tiny_data, log_dir))
    (log_dir / "stdout.txt").write_text(proc.stdout)
    (metrics,) = log_dir.glob("*/*/metrics.json")
    return metrics.parent


# The modules whose tests start processes (5-27 s each, Lightning's import alone ~6 s of CPU;
# most other tests take under a second). Run first, xdist spreads them over its workers and the
# quick tests even out the end; in alphabetical order the sweeps and searches came last (the
# suite: 277 and 285 s this way, 284 and 289 s alphabetically, two pairs on a quiet machine).
PROCESS_HEAVY = ("test_errors", "test_sweeps", "test_train_cli", "test_tuning", "test_slurm")
PROCESS_HEAVY += ("test_docs", "test_wandb", "test_gpu_benchmark", "test_reproduction")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Those modules' tests first, each module's in its own order (the same on every worker)."""
    items.sort(key=lambda item: item.path.stem not in PROCESS_HEAVY)
