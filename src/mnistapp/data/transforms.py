"""The image transforms of the app: the one normalisation, and the training-batch augmentation.

Training batches, evaluation, t-SNE, predict and export all go through :func:`normalize`, so a
model always sees its inputs scaled exactly as in training. :class:`RandomAffine` (``data.augment``)
changes training batches only, on their device, before they are normalised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# MNIST's training-set pixel mean and standard deviation, on the 0..1 scale.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def normalize(images: Tensor, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Tensor:
    """uint8 ``[B, H, W]`` → float ``[B, 1, H, W]``, ``(pixel / 255 - mean) / std``."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.sub_(mean).div_(std)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: Any) -> tuple[float, float] | None:
    """``[a, b]`` as a pair of floats, or None when it is not two finite numbers."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        return None
    if not all(_number(v) for v in value):
        return None
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class RandomAffine:
    """Random rotation, shift and zoom of a uint8 batch ``[B, H, W]``, drawn for each image.

    Like torchvision's ``RandomAffine``: ``degrees`` (``d`` for ``[-d, d]``, or ``[min, max]``;
    positive turns clockwise, as in torchvision's ``affine``), ``translate`` (the largest shift
    as a fraction of the width and of the height) and ``scale`` (``[min, max]`` zoom). Pixels
    that come in from outside the image are 0 (the black background of MNIST-style images).

    torchvision.transforms.v2.RandomAffine (0.29) draws ONE set of parameters per call, so a whole
    batch would move together, and it has no per-sample option. Here every image draws its own
    parameters and the batch is resampled at once with ``affine_grid``/``grid_sample``: batched
    tensor ops on the batch's device, no per-image loop, no PIL.
    """

    degrees: tuple[float, float] = (0.0, 0.0)
    translate: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], key: str = "data.augment") -> RandomAffine:
        """Build from a config mapping such as ``{degrees: 10, translate: [0.1, 0.1]}``.

        A bad mapping is a ``ValueError`` naming the offending ``key``'s entry.
        """
        if not isinstance(config, Mapping):
            raise ValueError(
                f"{key} must be null or a mapping such as "
                f"{{degrees: 10, translate: [0.1, 0.1], scale: [0.9, 1.1]}} (got {config!r})"
            )
        known = [f.name for f in fields(cls)]
        for name in config:
            if name not in known:
                raise ValueError(f"{key}.{name} is not a setting; {key} takes {', '.join(known)}")
        kwargs: dict[str, tuple[float, float]] = {}
        if "degrees" in config:
            value = config["degrees"]
            degrees = (-float(value), float(value)) if _number(value) else _pair(value)
            if degrees is None or not degrees[0] <= degrees[1] or (_number(value) and value < 0):
                raise ValueError(
                    f"{key}.degrees must be a number >= 0 or a pair [min, max] (got {value!r})"
                )
            kwargs["degrees"] = degrees
        if "translate" in config:
            value = config["translate"]
            translate = _pair(value)
            if translate is None or not all(0 <= t <= 1 for t in translate):
                raise ValueError(
                    f"{key}.translate must be two fractions in [0, 1], of the width and the "
                    f"height (got {value!r})"
                )
            kwargs["translate"] = translate
        if "scale" in config:
            value = config["scale"]
            scale = _pair(value)
            if scale is None or not 0 < scale[0] <= scale[1]:
                raise ValueError(f"{key}.scale must be a pair 0 < min <= max (got {value!r})")
            kwargs["scale"] = scale
        return cls(**kwargs)

    def as_config(self) -> dict[str, list[float]]:
        """Plain lists, as the config would write them (checkpoints hold plain values only)."""
        return {name: list(value) for name, value in asdict(self).items()}

    def __call__(self, images: Tensor) -> Tensor:
        """A randomly moved copy of each image of ``images`` (uint8 ``[B, H, W]``)."""
        n, height, width = images.shape
        # the default generator of the batch's device: seeded by seed_everything, and saved in
        # checkpoints with the other random states (Classifier.on_save_checkpoint)
        u = torch.rand(n, 4, device=images.device)
        low, high = self.degrees
        angles = low + (high - low) * u[:, 0]
        max_shift = torch.tensor(
            [self.translate[0] * width, self.translate[1] * height], device=images.device
        )
        shifts = (2 * u[:, 1:3] - 1) * max_shift
        low, high = self.scale
        scales = low + (high - low) * u[:, 3]
        return affine(images, angles, shifts, scales)


def affine(images: Tensor, angles: Tensor, shifts: Tensor, scales: Tensor) -> Tensor:
    """Rotate (degrees, clockwise), zoom and shift (pixels ``[B, 2]``: x right, y down) each image.

    The same geometry as ``torchvision.transforms.v2.functional.affine`` about the image centre,
    with its own parameters for each image of the uint8 batch ``[B, H, W]``; bilinear, zeros
    outside.
    """
    n, height, width = images.shape
    rad = torch.deg2rad(angles.float())
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps each output position to the input position it reads, in coordinates where
    # the image spans [-1, 1]: the inverse of "zoom and rotate about the centre, then shift".
    # In pixels (y pointing down) that inverse is [[c, s], [-s, c]] / scale; `half`
    # converts between pixels and [-1, 1] on each axis (they differ for non-square images).
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
