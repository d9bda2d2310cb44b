"""Compact nets: the "< 10k parameters" study's three (rebuilt from its counts) and pareto's."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mnistapp.models.base import ConvStack, ZooModel, check_int


class Conv10k(ZooModel):
    """Conv7(20) BN act -> Conv5(10) BN act -> MaxPool -> Conv5(num_classes) -> global avg pool."""

    def __init__(self, width: int = 20, activation: str = "relu", **io: int) -> None:
        super().__init__(**io)
        stack = ConvStack(self)
        stack.conv(width, 7, activation, batch_norm=True, where="the 7x7 conv")
        stack.conv(max(1, width // 2), 5, activation, batch_norm=True, where="the first 5x5 conv")
        stack.pool(where="the pool")
        self.body = nn.Sequential(*stack.layers, nn.Flatten())
        unflatten = nn.Unflatten(1, (stack.channels, stack.size, stack.size))
        stack.conv(self.num_classes, 5, None, where="the classifier 5x5 conv")
        pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(unflatten, stack.layers[-1], pool, nn.Flatten())


class SeparableConv2d(nn.Sequential):
    """Keras' ``SeparableConv2D``: depthwise ``k x k`` (no bias) then pointwise 1x1 (with bias)."""

    def __init__(self, c_in: int, c_out: int, k: int, padding: int = 0, bias: bool = True) -> None:
        depthwise = nn.Conv2d(c_in, c_in, k, padding=padding, groups=c_in, bias=False)
        super().__init__(depthwise, nn.Conv2d(c_in, c_out, 1, bias=bias))


class SeparableCNN(ZooModel):
    """Sep3(12) BN act -> Sep3(16) BN act -> MaxPool -> Sep3(16) BN act -> MaxPool -> Linear."""

    def __init__(self, width: int = 12, activation: str = "relu", **io: int) -> None:
        super().__init__(**io)
        wide = max(1, round(4 * width / 3))
        stack = ConvStack(self)
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
    """Inception(1x1: w, 3x3: 2w, 5x5: w) act Pool -> Conv3(w) act -> Conv3(2w) act Pool -> FC."""

    def __init__(self, width: int = 4, activation: str = "relu", **io: int) -> None:
        super().__init__(**io)
        block = InceptionBlock(self.in_channels, {1: width, 3: 2 * width, 5: width})
        stack, where = ConvStack(self), "the inception block"
        stack.conv(block.out_channels, 1, activation, padding="same", modules=[block], where=where)
        stack.pool(where="pool 1").conv(width, 3, activation, where="conv 1")
        stack.conv(2 * width, 3, activation, where="conv 2").pool(where="pool 2")
        self.body = nn.Sequential(*stack.layers, nn.Flatten())
        self.head = nn.Linear(stack.flat_features, self.num_classes)

    @property
    def first_conv(self) -> nn.Conv2d:
        """The inception block's largest-kernel branch (its kernels are the ones worth plotting)."""
        return self.body[0].branches[-1]


class SeparableNet(ZooModel):
    """Conv3 stem -> per ``channels`` entry, [MaxPool] and ``blocks`` x [Sep3 BN act] -> GAP -> FC.

    ``experiment=pareto_*``; ``width / stem`` scales every channel count; convs carry no bias.
    ``pools``: how many stages (the first ones) start with a 2x2 max pool; all when None.
    """

    def __init__(
        self,
        width: int = 8,
        stem: int = 8,
        channels: Sequence[int] = (16, 24),
        blocks: int = 1,
        pools: int | None = None,
        padding: str = "same",
        activation: str = "relu",
        **io: int,
    ) -> None:
        super().__init__(**io)
        scale = width / check_int("stem", stem)
        check_int("blocks", blocks)
        if not channels:
            raise ValueError("channels must list at least one stage, got []")
        pools = len(channels) if pools is None else check_int("pools", pools, low=0)
        pad = 1 if padding == "same" else 0  # ConvStack.conv refuses any other padding
        stack = ConvStack(self)
        stem_conv = [nn.Conv2d(self.in_channels, width, 3, padding=1, bias=False)]
        where = "the stem conv"
        stack.conv(
            width, 3, activation, modules=stem_conv, where=where, padding="same", batch_norm=True
        )
        for stage, size in enumerate((max(1, round(c * scale)) for c in channels), start=1):
            if stage <= pools:
                stack.pool(where=f"the pool before stage {stage}")
            for block in range(1, blocks + 1):
                sep = [*SeparableConv2d(stack.channels, size, 3, padding=pad, bias=False)]
                where = f"stage {stage}, block {block}"
                stack.conv(
                    size, 3, activation, modules=sep, where=where, padding=padding, batch_norm=True
                )
        self.body = nn.Sequential(*stack.layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(stack.channels, self.num_classes)
