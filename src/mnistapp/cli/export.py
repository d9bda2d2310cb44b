"""``mnistapp-export ckpt_path=<file> format=onnx|torchscript``: the bare network, deployable.

Input ``image`` float ``[batch, 1, H, W]`` normalised as in training (mean/std in the file's
metadata), output ``logits``, dynamic batch axis; checked against PyTorch within ``tolerance``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from mnistapp.cli.task import entry_point, run_on_checkpoint
from mnistapp.errors import DataSourceError

if TYPE_CHECKING:
    import torch

    from mnistapp.training.checkpoints import Restored

log = logging.getLogger(__name__)

RESULT_KEYS = ("model", "format", "path", "max_abs_diff", "verify_batch")
Runner = Callable[["torch.Tensor"], Any]  # the exported file, loaded back


class ExportError(RuntimeError):
    """The exported model does not reproduce PyTorch's outputs."""


def export_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict) -> Runner:
    """ONNX via the dynamo exporter, one self-contained file; run back by onnxruntime."""
    import onnxruntime as ort
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
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x.numpy()})[0]


def export_torchscript(
    net: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict
) -> Runner:
    """TorchScript by tracing (the zoo's forward has no data-dependent control flow)."""
    import torch

    with warnings.catch_warnings():
        # torch.jit is deprecated upstream but still the format some runtimes want
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(net, example)
        torch.jit.save(traced, str(path), _extra_files={"mnistapp.json": json.dumps(meta)})
        loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda x: loaded(x).detach().numpy()


FORMATS = {"onnx": (export_onnx, ".onnx"), "torchscript": (export_torchscript, ".pt")}


def export(cfg: DictConfig, restored: Restored) -> dict[str, Any]:
    """Write the network in ``cfg.format``, check it against PyTorch, return the run record."""
    import numpy as np
    import torch
    from hydra.utils import instantiate

    write, suffix = FORMATS[cfg.format]
    path = Path(cfg.output or Path(cfg.paths.output_dir) / f"model{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    net = restored.module.net.cpu().eval()
    try:  # test digits when the data is at hand (never downloaded here), else noise
        datamodule = instantiate(cfg.data, download=False)
        datamodule.prepare_data()
        datamodule.setup("test")
        x, source = next(iter(datamodule.test_dataloader()))[0][: cfg.verify_batch], "test digits"
    except (DataSourceError, OSError, ValueError) as err:
        log.warning("The data is not available (%s); verifying on random images", err)
        shape = (cfg.verify_batch, restored.image_size, restored.image_size)
        generator = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        source = "random images"
    x = restored.normalize(x.cpu())
    meta = {
        "model": restored.model_name,
        "checkpoint": str(restored.path),
        "input": f"image: float [batch, 1, {x.shape[-2]}, {x.shape[-1]}], (pixel/255 - mean) / std",
        **restored.normalization,
    }
    # a batch of 2 to trace with, so the exporter cannot mistake the batch size for a constant
    run = write(net, x[:2], path, meta)
    with torch.inference_mode():
        expected = net(x).numpy()
    diff = float(np.abs(run(x) - expected).max())
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


main = entry_point("export", hydra_main)

if __name__ == "__main__":
    main()
