"""The "< 10k parameters, > 99% in 10 epochs" study (Keras, Adam lr 1e-3): three compact nets,
our reconstructions from the published counts (the write-up gives no layers; docs/MODELS.md)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnistapp.models.base import ZooModel


class Conv10k(ZooModel):
    """Conv7(20) BN act -> Conv5(10) BN act -> MaxPool -> Conv5(num_classes) -> global average
    pool: 8,640 parameters (8,580 trainable), as published. The second conv gets ``width // 2``;
    ``features`` is the flat map the classifier conv reads (10 x 9 x 9 on 28x28)."""

    def __init__(self, width: int = 20, activation: str = "relu", **io: int) -> None:
        super().__init__(**io)
        stack = self.conv_stack()
        stack.conv(width, 7, activation, batch_norm=True, where="the 7x7 conv")
        stack.conv(max(1, width // 2), 5, activation, batch_norm=True, where="the first 5x5 conv")
        stack.pool(where="the pool")
        self.body = nn.Sequential(*stack.layers, nn.Flatten())
        unflatten = nn.Unflatten(1, (stack.channels, stack.size, stack.size))
        stack.conv(self.num_classes, 5, None, where="the classifier 5x5 conv")
        self.head = nn.Sequential(
            unflatten, stack.layers[-1], nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )


class SeparableConv2d(nn.Sequential):
    """Keras' ``SeparableConv2D``: depthwise ``k x k`` (no bias) then pointwise 1x1 (with bias)."""

    def __init__(self, c_in: int, c_out: int, k: int, padding: int = 0, bias: bool = True) -> None:
        depthwise = nn.Conv2d(c_in, c_in, k, padding=padding, groups=c_in, bias=False)
        super().__init__(depthwise, nn.Conv2d(c_in, c_out, 1, bias=bias))


class SeparableCNN(ZooModel):
    """Sep3(12) BN act -> Sep3(16) BN act -> MaxPool -> Sep3(16) BN act -> MaxPool -> Linear:
    4,863 trainable + 88 BatchNorm statistics (published 4,879 + 88). The later layers get
    ``round(4 * width / 3)``."""

    def __init__(self, width: int = 12, activation: str = "relu", **io: int) -> None:
        super().__init__(**io)
        wide = max(1, round(4 * width / 3))
        stack = self.conv_stack()
        for i, channels in enumerate((width, wide, wide), start=1):
            sep, where = SeparableConv2d(stack.channels, channels, 3), f"separable conv {i}"
            stack.conv(channels, 3, activation, batch_norm=True, modules=[sep], where=where)
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
    """Inception(1x1: w, 3x3: 2w, 5x5: w) act -> MaxPool -> Conv3(w) act -> Conv3(2w) act ->
    MaxPool -> Linear, ``w = width``: 3,078 parameters, all trainable (published 3,077)."""

    def __init__(self, width: int = 4, activation: str = "relu", **io: int) -> None:
        super().__init__(**io)
        block = InceptionBlock(self.in_channels, {1: width, 3: 2 * width, 5: width})
        stack, where = self.conv_stack(), "the inception block"
        stack.conv(block.out_channels, 1, activation, padding="same", modules=[block], where=where)
        stack.pool(where="pool 1").conv(width, 3, activation, where="conv 1")
        stack.conv(2 * width, 3, activation, where="conv 2").pool(where="pool 2")
        self.body = nn.Sequential(*stack.layers, nn.Flatten())
        self.head = nn.Linear(stack.flat_features, self.num_classes)

    @property
    def first_conv(self) -> nn.Conv2d:
        """The inception block's largest-kernel branch (its kernels are the ones worth plotting)."""
        return self.body[0].branches[-1]
