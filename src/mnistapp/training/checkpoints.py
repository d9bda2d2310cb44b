"""Checkpoints written atomically and loaded safely: ``torch.load(weights_only=True)`` admits only
tensors and plain containers, and a saved model config is never given to ``instantiate`` (its
``_target_`` could name any callable): only zoo classes are built."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO
from torch import nn

from mnistapp import models
from mnistapp.data.transforms import normalize
from mnistapp.errors import CheckpointError
from mnistapp.files import atomic_open, checkpoint_file
from mnistapp.training.module import Classifier

log = logging.getLogger(__name__)


@dataclass
class Restored:
    """A classifier rebuilt from a checkpoint, with the data settings it was trained with."""

    module: Classifier
    path: Path
    net_config: dict[str, Any]
    data_hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The model's config name as in training (``lenet``), else its class name."""
        return self.module.hparams.get("model_name") or type(self.module.net).__name__

    @property
    def normalization(self) -> dict[str, float]:
        """The ``mean``/``std`` the model was trained with (empty: MNIST's)."""
        return {k: self.data_hparams[k] for k in ("mean", "std") if k in self.data_hparams}

    @property
    def image_size(self) -> int:
        """The side of the square images the model was trained on."""
        return int(self.data_hparams.get("image_size", 28))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W]`` → model input ``[B, 1, H, W]``, exactly as in training."""
        return normalize(images, **self.normalization)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O through :func:`files.atomic_open`: the old file stays until the
    new one is whole. Lightning's own stages the file in ``$TMPDIR`` and copies it across
    filesystems, so a full disk or a kill left a truncated ``last.ckpt``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        if storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with atomic_open(Path(path)) as f:
                torch.save(checkpoint, f)
        except RuntimeError as err:
            # Ctrl-C inside a write: torch's zip writer fails closing and hides the interrupt,
            # which must stop the run as one (test_ctrl_c_inside_torch_save_is_an_interrupt)
            if isinstance(err.__context__, KeyboardInterrupt):
                raise err.__context__ from None
            raise


def _describe(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def load_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """Load a Lightning checkpoint onto the CPU without running any code stored in it."""
    path = checkpoint_file(path)
    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive (before torch 1.6: a pickle, which opens with PROTO 0x80)
    if not head.startswith((b"PK", b"\x80")):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither zip nor pickle)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if "Weights only load failed" in str(err):  # the first global outside the allow-list
            unsafe = re.search(r"GLOBAL ([\w.]+)", str(err))
            what = f"would call {unsafe.group(1)}" if unsafe else "uses pickle beyond plain data"
            raise CheckpointError(
                f"refusing to load {path}: it {what}, and a checkpoint may hold only tensors "
                "and plain values"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({_describe(err)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    return checkpoint


def newest_loadable(folder: str | Path) -> tuple[Path | None, list[str]]:
    """The newest ``*.ckpt`` in ``folder`` that loads (None when none does), and why each newer
    one does not."""
    problems = []
    for path in sorted(Path(folder).glob("*.ckpt"), key=lambda p: -p.stat().st_mtime):
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        return path, problems
    return None, problems


def build_net(net_config: Mapping[str, Any]) -> nn.Module:
    """Build a zoo model from its saved config, refusing any ``_target_`` outside the zoo."""
    target = str(net_config.get("_target_", ""))
    package, _, name = target.rpartition(".")
    cls = getattr(models, name, None) if package.startswith("mnistapp.models") else None
    if not (name in models.__all__ and isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"the saved model config names {target!r}, not a mnistapp model")
    kwargs = {k: v for k, v in net_config.items() if k != "_target_"}
    if any(k.startswith("_") for k in kwargs):  # Hydra's _partial_, _args_: more than a call
        raise CheckpointError(f"the saved model config has unexpected keys: {sorted(kwargs)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"the saved model config does not build {name}: {err}") from None


def _mismatch(own: Mapping[str, torch.Tensor], saved: Mapping[str, Any]) -> str | None:
    """How ``saved`` weights fail to fit ``own``, in one line; None if they fit."""
    shape = lambda t: "x".join(map(str, getattr(t, "shape", ())))  # noqa: E731
    problems = {
        "missing weights": sorted(own.keys() - saved.keys()),
        "unexpected weights": sorted(saved.keys() - own.keys()),
        "shape mismatches": [
            f"{k} is {shape(saved[k])} in the checkpoint, {shape(own[k])} in the model"
            for k in sorted(own.keys() & saved.keys())
            if tuple(own[k].shape) != tuple(getattr(saved[k], "shape", ()))
        ],
    }
    return "; ".join(f"{len(v)} {what} (e.g. {v[0]})" for what, v in problems.items() if v) or None


def restore(path: str | Path | None, model_config: Mapping[str, Any] | None = None) -> Restored:
    """Rebuild the checkpoint's classifier in eval mode from its saved ``net_config``, or from
    ``model_config`` (``model=``) when given, which the checkpoint must fit."""
    checkpoint = load_checkpoint(path)
    path = Path(path).expanduser()
    hparams = checkpoint.get("hyper_parameters") or {}
    saved_config = hparams.get("net_config")
    saved_target = (saved_config or {}).get("_target_")
    if model_config is not None:
        from hydra.utils import instantiate
        from omegaconf import DictConfig, OmegaConf

        if isinstance(model_config, DictConfig):
            model_config = OmegaConf.to_container(model_config, resolve=True)
        wanted = model_config.get("_target_")
        if saved_target and saved_target != wanted:
            raise CheckpointError(
                f"{path} holds a {saved_target.rpartition('.')[2]}, not the requested "
                f"{str(wanted).rpartition('.')[2]} (leave out model= to use the checkpoint's)"
            )
        try:
            net, net_config = instantiate(model_config), dict(model_config)
        except Exception as err:  # Hydra wraps the model's ValueError in its own error
            why = _describe(err.__cause__ or err)
            raise CheckpointError(f"model= does not build: {why}") from None
    elif saved_config:
        net, net_config = build_net(saved_config), dict(saved_config)
    else:
        raise CheckpointError(f"{path} records no model config: name it, e.g. model=lenet")
    module = Classifier(
        net,
        num_classes=hparams.get("num_classes", 10),
        net_config=net_config,
        model_name=hparams.get("model_name"),
        class_names=hparams.get("class_names"),
    )
    problem = _mismatch(module.state_dict(), checkpoint["state_dict"])
    if problem:
        raise CheckpointError(f"{path} does not fit {type(net).__name__}: {problem}")
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    log.info("Restored %s from %s", type(net).__name__, path)
    data_hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    return Restored(module, path, net_config, data_hparams)
