"""The pareto models: as much accuracy as a parameter budget buys (``experiment=pareto_*``).

One family serves every budget: a plain 3x3 stem conv, then stages of depthwise-separable 3x3
convs, 2x2 max pooling between stages, global average pooling and one linear layer. Where the
budget goes: the per-pixel work happens in cheap depthwise kernels (9 weights a channel), the
mixing in 1x1 convs, and no dense layer sees a whole feature map. Convs carry no bias, since
the BatchNorm after each has one.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mnistapp.models.base import ZooModel, check_positive, make_activation


def _separable(in_channels: int, out_channels: int, activation: str) -> list[nn.Module]:
    """Depthwise 3x3 -> pointwise 1x1 -> BatchNorm -> activation (``same`` padding)."""
    return [
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        make_activation(activation),
    ]


class SeparableNet(ZooModel):
    """Stem Conv3x3(``stem``) BN act, then for each entry of ``channels`` a stage of ``blocks``
    separable convs (the first widens to that entry), max pooling between stages, then global
    average pooling and Linear. ``width`` scales every channel count (``width / stem``).
    """

    def __init__(
        self,
        width: int = 8,
        stem: int = 8,
        channels: Sequence[int] = (16, 24),
        blocks: int = 1,
        activation: str = "relu",
        **io: int,
    ) -> None:
        super().__init__(activation=activation, **io)
        check_positive("stem", stem)
        check_positive("blocks", blocks)
        if not channels:
            raise ValueError("channels must list at least one stage, got []")
        scale = width / stem
        sizes = [max(1, round(c * scale)) for c in channels]
        stack = self.conv_stack()
        stack.add(
            nn.Conv2d(self.in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            make_activation(activation),
            channels=width,
            kernel=3,
            padding="same",
            where="the stem conv",
        )
        for stage, size in enumerate(sizes, start=1):
            stack.pool(where=f"the pool before stage {stage}")
            for block in range(blocks):
                stack.add(
                    *_separable(stack.channels, size, activation),
                    channels=size,
                    kernel=3,
                    padding="same",
                    where=f"stage {stage}, block {block + 1}",
                )
        self.body = nn.Sequential(*stack.layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(stack.channels, self.num_classes)
