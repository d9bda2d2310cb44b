"""``mnistapp-export ckpt_path=<file> format=onnx|torchscript``: a deployable model.

The exported model is the bare network: input ``image`` float ``[batch, 1, H, W]`` normalised
with the training mean/std (recorded in the file's metadata), output ``logits [batch, 10]``; the
batch axis is dynamic. After writing, the file is loaded back (onnxruntime for ONNX) and compared
with PyTorch on a batch of test digits; a difference above ``tolerance`` fails the export.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from mnistapp.cli.task import entry_point, run_on_checkpoint

if TYPE_CHECKING:
    import torch

    from mnistapp.training.checkpoints import Restored

log = logging.getLogger(__name__)

RESULT_KEYS = ("model", "format", "path", "max_abs_diff", "verify_batch")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportError(RuntimeError):
    """The exported model does not reproduce PyTorch's outputs."""


def verification_batch(cfg: DictConfig, restored: Restored) -> tuple[torch.Tensor, str]:
    """Normalised test digits when MNIST is at hand (never downloaded here), else noise."""
    import torch
    from hydra.utils import instantiate

    from mnistapp.data.sources import DataSourceError

    n = cfg.verify_batch
    try:
        datamodule = instantiate(cfg.data, download=False)
        datamodule.prepare_data()
        datamodule.setup("test")
        images = next(iter(datamodule.test_dataloader()))[0][:n]
        source = "test digits"
    except (DataSourceError, OSError, ValueError) as err:
        log.warning("MNIST is not available (%s); verifying on random images", err)
        generator = torch.Generator().manual_seed(0)
        size = restored.image_size
        images = torch.randint(0, 256, (n, size, size), dtype=torch.uint8, generator=generator)
        source = "random images"
    return restored.normalize(images.cpu()), source


def export_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    """ONNX via the dynamo exporter, one self-contained file, dynamic batch axis."""
    import torch

    # the exporter's passes log every step at INFO, which Hydra's console logging would show
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(
        net,
        (example,),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )
    program.model.metadata_props.update({k: str(v) for k, v in meta.items()})
    program.save(path, external_data=False)


def run_onnx(path: Path, x: torch.Tensor) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def export_torchscript(net: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    """TorchScript by tracing (the zoo's forward has no data-dependent control flow)."""
    import torch

    with warnings.catch_warnings():
        # torch.jit is deprecated upstream but still the format some runtimes want
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(net, example)
        torch.jit.save(traced, str(path), _extra_files={"mnistapp.json": json.dumps(meta)})


def run_torchscript(path: Path, x: torch.Tensor) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(x).numpy()


FORMATS = {"onnx": (export_onnx, run_onnx), "torchscript": (export_torchscript, run_torchscript)}


def export(cfg: DictConfig, restored: Restored) -> dict[str, Any]:
    """Write the network in ``cfg.format``, check it against PyTorch, return the run record."""
    import numpy as np
    import torch

    write, run = FORMATS[cfg.format]
    path = Path(cfg.output or Path(cfg.paths.output_dir) / f"model{SUFFIXES[cfg.format]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    net = restored.module.net.cpu().eval()
    x, source = verification_batch(cfg, restored)
    meta = {
        "model": restored.model_name,
        "checkpoint": str(restored.path),
        "input": f"image: float [batch, 1, {x.shape[-2]}, {x.shape[-1]}], (pixel/255 - mean) / std",
        **restored.normalization,
    }
    # a batch of 2 to trace with, so the exporter cannot mistake the batch size for a constant
    write(net, x[:2], path, meta)
    with torch.inference_mode():
        expected = net(x).numpy()
    diff = float(np.abs(run(path, x) - expected).max())
    log.info("%s vs PyTorch on %d %s: max abs difference %.3g", path.name, len(x), source, diff)
    if not diff <= cfg.tolerance:
        raise ExportError(f"{path} differs from PyTorch by {diff:.3g} > tolerance {cfg.tolerance}")
    return {
        "model": restored.model_name,
        "format": cfg.format,
        "path": str(path),
        "max_abs_diff": diff,
        "verify_batch": len(x),
        "verify_inputs": source,
        "ckpt_path": str(restored.path),
    }


@hydra.main(version_base="1.3", config_path="pkg://mnistapp.conf", config_name="export")
def hydra_main(cfg: DictConfig) -> None:
    """``mnistapp-export ckpt_path=<file> format=onnx|torchscript [output=<file>]``."""
    run_on_checkpoint("export", export, cfg, RESULT_KEYS)


# the console script and `python -m`: Hydra's own errors become one line (cli.task)
main = entry_point("export", hydra_main)

if __name__ == "__main__":
    main()
