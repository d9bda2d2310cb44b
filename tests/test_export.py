"""``mnistapp-export``: ONNX and TorchScript files that match PyTorch, any batch size."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistapp.training.checkpoints import restore
from tests.helpers import compose, run_module


@pytest.fixture(scope="module")
def trained(trained_run: Path, tiny_data: Path) -> tuple[Path, Path]:
    return trained_run / "checkpoints" / "last.ckpt", tiny_data


def run_exported(fmt: str, path: Path, x: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"image": x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        return torch.jit.load(str(path)).eval()(x).detach().numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(
    fmt: str, trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, data_dir = trained
    out = tmp_path / f"exported.{fmt}"
    from mnistapp.cli.export import RESULT_KEYS, export
    from mnistapp.cli.task import run_on_checkpoint

    cfg = compose(
        f"ckpt_path={ckpt}",
        f"format={fmt}",
        f"output={out}",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        "data.verify=false",
        "data.val_size=100",
        config_name="export",
        output_dir=tmp_path / "run",
    )
    run_on_checkpoint("export", export, cfg, RESULT_KEYS)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["path"] == str(out) and out.is_file()
    assert metrics["verify_inputs"] == "test digits" and metrics["verify_batch"] == 200
    assert metrics["max_abs_diff"] <= 1e-4 and "max_abs_diff" in capsys.readouterr().out
    # the batch axis is dynamic: other batch sizes than the traced one run and agree
    restored = restore(ckpt)
    for batch in (1, 5, 64):
        x = restored.normalize(torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8))
        with torch.inference_mode():
            expected = restored.module.net(x).numpy()
        got = run_exported(fmt, out, x)
        assert got.shape == (batch, 10)
        assert np.abs(got - expected).max() <= 1e-4


def test_a_refused_export_is_one_line_with_exit_2(tmp_path: Path) -> None:
    proc = run_module(
        "mnistapp.cli.export",
        f"ckpt_path={tmp_path / 'missing.ckpt'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"export: error: no checkpoint file at {tmp_path / 'missing.ckpt'}"
    ]
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("*"))
