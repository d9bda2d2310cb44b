"""The one normalisation (every path a model sees images by) and the training-batch augmentation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# MNIST's training-set pixel mean and standard deviation, on the 0..1 scale.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def normalize(images: Tensor, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Tensor:
    """uint8 ``[B, H, W]`` → float ``[B, 1, H, W]``, ``(pixel / 255 - mean) / std``."""
    return images.unsqueeze(1).float().div_(255.0).sub_(mean).div_(std)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: Any) -> tuple[float, float] | None:
    """``[a, b]`` as two floats, or None when it is not two finite numbers."""
    ok = not isinstance(value, str) and isinstance(value, Sequence) and len(value) == 2
    return (float(value[0]), float(value[1])) if ok and all(map(_number, value)) else None


# each setting of data.augment: what it must be, and the check of its pair
SETTINGS = {
    "degrees": ("a number >= 0 or a pair [min, max]", lambda p: p[0] <= p[1]),
    "translate": ("two fractions in [0, 1] (width, height)", lambda p: all(0 <= t <= 1 for t in p)),
    "scale": ("a pair 0 < min <= max", lambda p: 0 < p[0] <= p[1]),
}


@dataclass(frozen=True)
class RandomAffine:
    """Random rotation (degrees, clockwise), shift (fractions of width and height) and zoom of a
    uint8 batch ``[B, H, W]``, as torchvision's ``RandomAffine`` but drawn for each image: its
    (0.29) draws one set per call, moving the whole batch together."""

    degrees: tuple[float, float] = (0.0, 0.0)
    translate: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomAffine:
        """From ``data.augment``, such as ``{degrees: 10}``; a ValueError names a bad entry."""
        if not isinstance(config, Mapping):
            raise ValueError(
                "data.augment must be null or a mapping such as "
                f"{{degrees: 10, translate: [0.1, 0.1], scale: [0.9, 1.1]}} (got {config!r})"
            )
        kwargs: dict[str, tuple[float, float]] = {}
        for name, value in config.items():
            if name not in SETTINGS:
                keys = ", ".join(SETTINGS)
                raise ValueError(f"data.augment.{name} is not a setting; data.augment takes {keys}")
            symmetric = name == "degrees" and _number(value) and value >= 0
            pair = (-float(value), float(value)) if symmetric else _pair(value)
            rule, ok = SETTINGS[name]
            if pair is None or not ok(pair):
                raise ValueError(f"data.augment.{name} must be {rule} (got {value!r})")
            kwargs[name] = pair
        return cls(**kwargs)

    def as_config(self) -> dict[str, list[float]]:
        """Plain lists, as the config would write them (checkpoints hold plain values only)."""
        return {name: list(value) for name, value in asdict(self).items()}

    def __call__(self, images: Tensor) -> Tensor:
        """A randomly moved copy of each image of ``images`` (uint8 ``[B, H, W]``)."""
        n, height, width = images.shape
        # the device's default generator: seeded by seed_everything, and saved in checkpoints
        # with the other random states (Classifier.on_save_checkpoint)
        u = torch.rand(n, 4, device=images.device)
        angles = self.degrees[0] + (self.degrees[1] - self.degrees[0]) * u[:, 0]
        max_shift = torch.tensor([self.translate[0] * width, self.translate[1] * height])
        shifts = (2 * u[:, 1:3] - 1) * max_shift.to(images.device)
        scales = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 3]
        return affine(images, angles, shifts, scales)


def affine(images: Tensor, angles: Tensor, shifts: Tensor, scales: Tensor) -> Tensor:
    """torchvision's ``affine`` about the centre, one set per image of a uint8 batch: rotate
    (degrees, clockwise), zoom and shift (pixels ``[B, 2]``, x right, y down)."""
    n, height, width = images.shape
    rad = torch.deg2rad(angles.float())
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid wants the inverse map (output -> input position) with the image spanning
    # [-1, 1]: in pixels (y down) that is [[c, s], [-s, c]] / scale; `half` converts per axis.
    half = torch.tensor([width / 2, height / 2], device=images.device)
    inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    inverse = inverse / scales.float()[:, None, None]
    linear = inverse * half[None, None, :] / half[None, :, None]  # diag(1/half) A diag(half)
    offset = -(inverse @ shifts.float()[:, :, None])[..., 0] / half
    theta = torch.cat([linear, offset[:, :, None]], dim=2)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    moved = F.grid_sample(
        images[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return moved[:, 0].round_().clamp_(0, 255).to(torch.uint8)
