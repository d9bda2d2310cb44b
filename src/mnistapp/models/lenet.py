"""LeNet-5 as in the PyTorch study (tanh, average pooling, 5x5 kernels)."""

from __future__ import annotations

from torch import nn

from mnistapp.models.base import POOLS, ZooModel, check_choice, scaled


class LeNet5(ZooModel):
    """Conv5(6) act Pool -> Conv5(16) act Pool -> Conv(120) -> Linear(84) act -> Linear.

    44,426 parameters on 28x28. The third conv's kernel spans the remaining map (4 on 28x28, 5 on
    32x32), so it yields 1x1; no activation follows it. C3, C5, F6 scale with ``width / 6``."""

    def __init__(
        self, width: int = 6, activation: str = "tanh", pool: str = "avg", **io: int
    ) -> None:
        super().__init__(**io)
        check_choice("pool", pool, POOLS)
        c3, c5, f6 = scaled(16, width, 6), scaled(120, width, 6), scaled(84, width, 6)
        stack = self.conv_stack()
        stack.conv(width, 5, activation, where="C1").pool(pool, where="S2")
        stack.conv(c3, 5, activation, where="C3").pool(pool, where="S4")
        stack.conv(c5, stack.size, None, where="C5")
        self.body = nn.Sequential(*stack.dense(f6, activation).layers)
        self.head = nn.Linear(f6, self.num_classes)
