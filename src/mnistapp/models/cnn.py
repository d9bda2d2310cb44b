"""Plain conv nets: the PyTorch study's "deeper" CNN and the speedrun reference's small CNN."""

from __future__ import annotations

from torch import nn

from mnistapp.models.base import ZooModel, check_int, scaled


class DeeperCNN(ZooModel):
    """Conv3(32) Pool -> Conv3(64) -> Conv3(64) Pool -> Linear(100) -> Linear: 159,254 params.
    The next convs get ``2 * width``; ``dense`` None is 100 scaled by ``width / 32``."""

    def __init__(
        self, width: int = 32, dense: int | None = None, activation: str = "relu", **io: int
    ) -> None:
        super().__init__(**io)
        dense = scaled(100, width, 32) if dense is None else check_int("dense", dense)
        stack = self.conv_stack()
        stack.conv(width, 3, activation, where="conv1").pool(where="pool1")
        stack.conv(2 * width, 3, activation, where="conv2")
        stack.conv(2 * width, 3, activation, where="conv3").pool(where="pool2")
        self.body = nn.Sequential(*stack.dense(dense, activation).layers)
        self.head = nn.Linear(dense, self.num_classes)


class FastCNN(ZooModel):
    """Conv5(24) Pool -> Conv3(32) Pool -> Linear(256) -> Linear: 215,194 params, the speedrun
    reference's net (``experiment=speedrun``: 99% in one epoch). The second conv gets
    ``round(4 * width / 3)``; ``dense`` None is 256 scaled by ``width / 24``."""

    def __init__(
        self, width: int = 24, dense: int | None = None, activation: str = "relu", **io: int
    ) -> None:
        super().__init__(**io)
        dense = scaled(256, width, 24) if dense is None else check_int("dense", dense)
        stack = self.conv_stack()
        stack.conv(width, 5, activation, where="conv1").pool(where="pool1")
        stack.conv(scaled(32, width, 24), 3, activation, where="conv2").pool(where="pool2")
        self.body = nn.Sequential(*stack.dense(dense, activation).layers)
        self.head = nn.Linear(dense, self.num_classes)
