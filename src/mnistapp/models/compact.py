"""The "< 10k parameters, > 99% in 10 epochs" study (Keras, Adam lr 1e-3): three compact nets.

The write-up gives each model's parameter count, not its layers; the layers here are our
reconstruction from its description, sized to land on (or within 1% of) the published counts
when counted as Keras does (``count_parameters``: BatchNorm running stats are non-trainable).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnistapp.models.base import (
    ZooModel,
    make_activation,
)


class Conv10k(ZooModel):
    """Big kernels + BatchNorm, no dense layer: 8,640 parameters (8,580 trainable), as published.

    Conv7x7(20) BN act -> Conv5x5(10) BN act -> MaxPool -> Conv5x5(num_classes) -> global average
    pool. ``width`` is the first conv's channels; the second gets ``width // 2`` (>= 1).
    ``features`` is the flattened map the classifier conv reads (10 x 9 x 9 on 28x28).
    """

    def __init__(
        self,
        width: int = 20,
        activation: str = "relu",
        **io: int,
    ) -> None:
        super().__init__(activation=activation, **io)
        stack = self.conv_stack()
        stack.conv(width, 7, activation, batch_norm=True, where="the 7x7 conv")
        stack.conv(max(1, width // 2), 5, activation, batch_norm=True, where="the first 5x5 conv")
        stack.pool(where="the pool")
        self.body = nn.Sequential(*stack.layers, nn.Flatten())
        channels, size = stack.channels, stack.size
        classifier = nn.Conv2d(channels, self.num_classes, 5)
        stack.add(classifier, channels=self.num_classes, kernel=5, where="the classifier 5x5 conv")
        self.head = nn.Sequential(
            nn.Unflatten(1, (channels, size, size)),
            classifier,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


class SeparableConv2d(nn.Sequential):
    """Keras' ``SeparableConv2D``: depthwise ``k x k`` (no bias) then pointwise 1x1 (with bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class SeparableCNN(ZooModel):
    """Depthwise-separable 3x3 convs + BatchNorm: 4,951 parameters (published: 4,967, -0.3%).

    Sep3x3(12) BN act -> Sep3x3(16) BN act -> MaxPool -> Sep3x3(16) BN act -> MaxPool -> Flatten
    (16 x 5 x 5) -> Linear. 4,863 trainable + 88 BatchNorm statistics; the 88 non-trainable
    match the published split exactly. ``width`` is the first layer's channels; the others get
    ``round(4 * width / 3)`` (16 at 12).
    """

    def __init__(
        self,
        width: int = 12,
        activation: str = "relu",
        **io: int,
    ) -> None:
        super().__init__(activation=activation, **io)
        wide = max(1, round(4 * width / 3))
        stack = self.conv_stack()
        for i, channels in enumerate((width, wide, wide), start=1):
            stack.add(
                SeparableConv2d(stack.channels, channels, 3),
                nn.BatchNorm2d(channels),
                make_activation(activation),
                channels=channels,
                kernel=3,
                where=f"separable conv {i}",
            )
            if i > 1:
                stack.pool(where=f"pool {i - 1}")
        self.body = nn.Sequential(*stack.layers, nn.Flatten())
        self.head = nn.Linear(stack.flat_features, self.num_classes)


class InceptionBlock(nn.Module):
    """Parallel ``same``-padded convs of different kernel sizes, concatenated on channels."""

    def __init__(self, in_channels: int, branches: dict[int, int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, out, k, padding=k // 2) for k, out in branches.items()
        )
        self.out_channels = sum(branches.values())

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class InceptionCNN(ZooModel):
    """An inception block first, then plain convs: 3,078 parameters (published: 3,077, +0.03%).

    Inception(1x1: w, 3x3: 2w, 5x5: w) act -> MaxPool -> Conv3x3(w) act -> Conv3x3(2w) act ->
    MaxPool -> Flatten (8 x 5 x 5) -> Linear, with ``w = width = 4``. No BatchNorm, so all
    parameters are trainable, as published. ``first_conv`` is the 5x5 branch (its kernels are
    the ones worth plotting).
    """

    def __init__(
        self,
        width: int = 4,
        activation: str = "relu",
        **io: int,
    ) -> None:
        super().__init__(activation=activation, **io)
        inception = InceptionBlock(self.in_channels, {1: width, 3: 2 * width, 5: width})
        stack = self.conv_stack()
        stack.add(
            inception,
            make_activation(activation),
            channels=inception.out_channels,
            kernel=1,
            padding="same",
            where="the inception block",
        )
        stack.pool(where="pool 1")
        stack.conv(width, 3, activation, where="conv 1")
        stack.conv(2 * width, 3, activation, where="conv 2").pool(where="pool 2")
        self.body = nn.Sequential(*stack.layers, nn.Flatten())
        self.head = nn.Linear(stack.flat_features, self.num_classes)

    @property
    def first_conv(self) -> nn.Conv2d:
        """The inception block's largest-kernel branch."""
        return self.body[0].branches[-1]
