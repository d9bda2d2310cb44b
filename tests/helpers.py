"""Test helpers: tiny but valid MNIST IDX files, a runner for the real command line, PNG checks."""

from __future__ import annotations

import json
import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mnistapp.data.sources import idx_bytes

ROOT = Path(__file__).resolve().parents[1]


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 uint8 images: class k is a bright 6x6 block at its own place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = 2 + (k // 5) * 12, 2 + (k % 5) * 5
        images[i, r : r + 6, c : c + 6] = rng.integers(200, 256, size=(6, 6), dtype=np.uint8)
    return images, labels.astype(np.uint8)


def write_idx_dataset(data_dir: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """Write the four IDX files under ``<data_dir>/MNIST/raw``; return ``data_dir``."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return data_dir


def tiny_overrides(data_dir: Path, log_dir: Path) -> list[str]:
    """Overrides that point a run at the tiny data, offline, on the CPU, quickly."""
    return [
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={log_dir}",
        "data.download=false",
        "data.verify=false",
        "data.val_size=100",
        "data.batch_size=32",
        "data.eval_batch_size=100",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.enable_model_summary=false",
        "callbacks.progress_bar=null",
    ]


def _run_python(
    argv: list[str], timeout: int, check: bool, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HYDRA_FULL_ERROR": "1",
        "WANDB_MODE": "offline",
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_cli(
    script: str,
    *args: str,
    timeout: int = 300,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python <script> args...`` from the repository like a user would (``env`` added)."""
    return _run_python([str(ROOT / script), *args], timeout, check, env)


def run_module(
    module: str,
    *args: str,
    timeout: int = 300,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> args...`` from the repository (``env`` added)."""
    return _run_python(["-m", module, *args], timeout, check, env)


def run_script(script: str, *args: str, capsys: Any, monkeypatch: Any) -> str:
    """``python <script> args...`` as ``__main__`` in this process (torch and Lightning are
    imported already): its stdout. What a script changes for its process (``sys.argv``,
    ``sys.path``, log levels and the root logger's handlers, which Hydra points at this test's
    captured output, torch's threads) is put back afterwards."""
    import torch

    monkeypatch.setattr(sys, "argv", [str(ROOT / script), *args])
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = logging.getLogger()
    loggers = [root, *map(logging.getLogger, ("lightning.pytorch", "lightning.fabric"))]
    levels, handlers = [logger.level for logger in loggers], list(root.handlers)
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for handler in set(root.handlers) - set(handlers):
            handler.close()  # Hydra's: the run's log file, and a stream that is closed next
        root.handlers[:] = handlers
    return capsys.readouterr().out


def train_here(*overrides: str, output_dir: Path) -> dict[str, Any]:
    """``python train.py overrides...`` in this process, into ``output_dir``: its record. Its W&B
    run is finished as a job's is: one left open would be reused by the next test's logger."""
    from mnistapp.cli.task import run_task
    from mnistapp.cli.train import RESULT_KEYS, train
    from mnistapp.training import tracking

    try:
        return run_task(train, compose(*overrides, output_dir=output_dir), RESULT_KEYS)
    finally:
        tracking.finish_runs()


def resume_here(run_dir: Path, *extra: str) -> dict[str, Any]:
    """``python train.py resume=<run_dir> extra...`` in this process: the overrides
    ``expand_resume`` puts back, in the folder they name, claimed as ``Preflight`` claims it."""
    from mnistapp.cli.schema import Preflight
    from mnistapp.cli.train import expand_resume

    argv = expand_resume([f"resume={run_dir}", *extra])
    cfg = compose(*argv)
    preflight = Preflight()
    preflight.on_run_start(cfg)  # checks the values; a resume of its own run: locked
    try:
        return train_here(*argv, output_dir=Path(cfg.hydra.run.dir))
    finally:
        if hasattr(preflight, "lock"):
            os.close(preflight.lock)


def train_tiny(data_dir: Path, log_dir: Path, *extra: str) -> Path:
    """Train the tiny LeNet in this process; return its run directory (``log_dir/run``)."""
    train_here(*tiny_overrides(data_dir, log_dir), *extra, output_dir=log_dir / "run")
    return log_dir / "run"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_kb: float = 8) -> None:
    """``path`` is a PNG of at least ``min_kb`` KB that PIL decodes."""
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > min_kb * 1024, (path, len(data))
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width > 300 and image.height > 150, image.size


def fake_job(sweep_dir: Path, num: int, overrides: list[str], record: dict | None) -> None:
    """A job directory as Hydra and run_task leave it (``record`` None: no metrics.json)."""
    job_dir = sweep_dir / str(num)
    (job_dir / ".hydra").mkdir(parents=True)
    hydra = {"hydra": {"mode": "MULTIRUN", "job": {"num": num}, "overrides": {"task": overrides}}}
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if record is not None:
        (job_dir / "metrics.json").write_text(json.dumps(record))


def compose(*overrides: str, config_name: str = "config", output_dir: Path | None = None) -> Any:
    """The config ``python <entry point> overrides...`` would run, composed in this process.

    Hydra's own state is set as a run would set it (``HydraConfig``, our resolvers), so the
    composed config can go straight into ``train(cfg)`` or ``run_task``; ``output_dir`` is the
    run folder (Hydra makes one from the time; tests give their own).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mnistapp.runtime import register_resolvers

    register_resolvers()
    with initialize_config_module("mnistapp.conf", version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    return cfg
