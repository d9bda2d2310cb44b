"""The one image transform of the app: uint8 digits to standardised float model input.

Training batches, evaluation, t-SNE, predict and export all go through :func:`normalize`, so a
model always sees its inputs scaled exactly as in training.
"""

from __future__ import annotations

from torch import Tensor

# MNIST's training-set pixel mean and standard deviation, on the 0..1 scale.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def normalize(images: Tensor, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Tensor:
    """uint8 ``[B, H, W]`` → float ``[B, 1, H, W]``, ``(pixel / 255 - mean) / std``."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.sub_(mean).div_(std)
