"""The small-model study: a Keras-style CNN whose knobs shrink it to 841 params (``tiny_cnn``)."""

from __future__ import annotations

from torch import nn

from mnistapp.models.base import ConvStack, ZooModel, check_int, dropout_layers


class BaselineCNN(ZooModel):
    """Conv3 -> depth x [Conv3 MaxPool Dropout] -> [Conv1x1] -> [Dense Dropout] -> Dense.

    ``dense`` None is ``4 * width``, 0 none; ``pointwise``: a 1x1 conv's channels, 0 none.
    """

    def __init__(
        self,
        width: int = 32,
        depth: int = 1,
        growth: float = 2.0,
        dense: int | None = None,
        pointwise: int = 0,
        padding: str = "valid",
        activation: str = "relu",
        dropout_conv: float = 0.25,
        dropout_dense: float = 0.5,
        **io: int,
    ) -> None:
        super().__init__(**io)
        dense = 4 * width if dense is None else check_int("dense", dense, low=0)
        channels = max(1, round(growth * width))
        stack = ConvStack(self, depth=depth, padding=padding)
        stack.conv(width, 3, activation, padding=padding, where="conv 1")
        for block in range(1, depth + 1):
            stack.conv(channels, 3, activation, padding=padding, where=f"block {block}'s conv")
            stack.pool(where=f"block {block}'s pool").layers += dropout_layers(dropout_conv)
        if pointwise:
            stack.conv(pointwise, 1, activation, where="the 1x1 conv")
        if dense:
            body = stack.dense(dense, activation).layers
            head = nn.Sequential(*dropout_layers(dropout_dense), nn.Linear(dense, self.num_classes))
        else:
            body = [*stack.layers, nn.Flatten()]
            head = nn.Linear(stack.flat_features, self.num_classes)
        self.head, self.body = head, nn.Sequential(*body)  # head first: saved checkpoints' order
