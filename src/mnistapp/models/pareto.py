"""The pareto models: as much accuracy as a parameter budget buys (``experiment=pareto_*``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mnistapp.models.base import ZooModel, check_int
from mnistapp.models.compact import SeparableConv2d


class SeparableNet(ZooModel):
    """Stem Conv3(``stem``) BN act, then per entry of ``channels`` a 2x2 max pool and a stage of
    ``blocks`` separable 3x3 convs (BN act after each; the first widens to that entry), global
    average pooling, Linear. ``width`` scales every channel count by ``width / stem``. Convs
    carry no bias: the BatchNorm after each has one (docs/MODELS.md: where the budget goes)."""

    def __init__(
        self,
        width: int = 8,
        stem: int = 8,
        channels: Sequence[int] = (16, 24),
        blocks: int = 1,
        activation: str = "relu",
        **io: int,
    ) -> None:
        super().__init__(**io)
        scale = width / check_int("stem", stem)
        check_int("blocks", blocks)
        if not channels:
            raise ValueError("channels must list at least one stage, got []")
        stack, same_bn = self.conv_stack(), {"padding": "same", "batch_norm": True}
        stem_conv = [nn.Conv2d(self.in_channels, width, 3, padding=1, bias=False)]
        stack.conv(width, 3, activation, modules=stem_conv, where="the stem conv", **same_bn)
        for stage, size in enumerate((max(1, round(c * scale)) for c in channels), start=1):
            stack.pool(where=f"the pool before stage {stage}")
            for block in range(1, blocks + 1):
                sep = [*SeparableConv2d(stack.channels, size, 3, padding=1, bias=False)]
                where = f"stage {stage}, block {block}"
                stack.conv(size, 3, activation, modules=sep, where=where, **same_bn)
        self.body = nn.Sequential(*stack.layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(stack.channels, self.num_classes)
