"""LeNet-5 as in the PyTorch study (tanh, average pooling, 5x5 kernels)."""

from __future__ import annotations

from torch import nn

from mnistapp.models.base import (
    POOLS,
    ZooModel,
    check_choice,
    make_activation,
    scaled,
)


class LeNet5(ZooModel):
    """Conv5(6) act Pool -> Conv5(16) act Pool -> Conv(120) -> Linear(84) act -> Linear.

    44,426 parameters on 28x28. The third conv's kernel spans the whole remaining map (4x4 on
    28x28, the classic 5x5 on 32x32), so it always yields 120 features of 1x1; as in the study,
    no activation follows it. ``width`` is C1's channel count; C3, C5 and F6 scale with
    ``width / 6``. ``activation``: tanh (study) or e.g. relu; ``pool``: avg (study) or max.
    """

    def __init__(
        self,
        width: int = 6,
        activation: str = "tanh",
        pool: str = "avg",
        **io: int,
    ) -> None:
        super().__init__(activation=activation, **io)
        check_choice("pool", pool, tuple(POOLS))
        c3, c5, f6 = scaled(16, width, 6), scaled(120, width, 6), scaled(84, width, 6)
        stack = self.conv_stack()
        stack.conv(width, 5, activation, where="C1").pool(pool, where="S2")
        stack.conv(c3, 5, activation, where="C3").pool(pool, where="S4")
        stack.conv(c5, stack.size, None, where="C5")
        self.body = nn.Sequential(
            *stack.layers, nn.Flatten(), nn.Linear(c5, f6), make_activation(activation)
        )
        self.head = nn.Linear(f6, self.num_classes)
