"""Plain conv nets: LeNet-5, the PyTorch study's "deeper" CNN and the speedrun reference's CNN."""

from __future__ import annotations

from torch import nn

from mnistapp.models.base import ConvStack, ZooModel, check_int, scaled


class LeNet5(ZooModel):
    """Conv5(6) act Pool -> Conv5(16) act Pool -> Conv(120) -> Linear(84) act -> Linear."""

    def __init__(
        self, width: int = 6, activation: str = "tanh", pool: str = "avg", **io: int
    ) -> None:
        super().__init__(**io)
        c3, c5, f6 = scaled(16, width, 6), scaled(120, width, 6), scaled(84, width, 6)
        stack = ConvStack(self)
        stack.conv(width, 5, activation, where="C1").pool(pool, where="S2")
        stack.conv(c3, 5, activation, where="C3").pool(pool, where="S4")
        stack.conv(c5, stack.size, None, where="C5")  # spans the remaining map: 1x1 out
        self.body = nn.Sequential(*stack.dense(f6, activation).layers)
        self.head = nn.Linear(f6, self.num_classes)


class DeeperCNN(ZooModel):
    """Conv3(32) Pool -> Conv3(64) -> Conv3(64) Pool -> Linear(100) -> Linear (docs/MODELS.md)."""

    def __init__(
        self, width: int = 32, dense: int | None = None, activation: str = "relu", **io: int
    ) -> None:
        super().__init__(**io)
        dense = scaled(100, width, 32) if dense is None else check_int("dense", dense)
        stack = ConvStack(self)
        stack.conv(width, 3, activation, where="conv1").pool(where="pool1")
        stack.conv(2 * width, 3, activation, where="conv2")
        stack.conv(2 * width, 3, activation, where="conv3").pool(where="pool2")
        self.body = nn.Sequential(*stack.dense(dense, activation).layers)
        self.head = nn.Linear(dense, self.num_classes)


class FastCNN(ZooModel):
    """Conv5(24) Pool -> Conv3(32) Pool -> Linear(256) -> Linear, ``experiment=speedrun``'s net."""

    def __init__(
        self, width: int = 24, dense: int | None = None, activation: str = "relu", **io: int
    ) -> None:
        super().__init__(**io)
        dense = scaled(256, width, 24) if dense is None else check_int("dense", dense)
        stack = ConvStack(self)
        stack.conv(width, 5, activation, where="conv1").pool(where="pool1")
        stack.conv(scaled(32, width, 24), 3, activation, where="conv2").pool(where="pool2")
        self.body = nn.Sequential(*stack.dense(dense, activation).layers)
        self.head = nn.Linear(dense, self.num_classes)
