"""The small-model study: a Keras-style baseline CNN and the knobs that shrink it to 841 params.

The study's smallest model (``tiny_cnn``, 841 parameters) is this class with other knob values:
``conf/model/tiny_cnn.yaml``. Variants are configs, not subclasses.
"""

from __future__ import annotations

from torch import nn

from mnistapp.models.base import (
    PADDINGS,
    ZooModel,
    check_choice,
    check_non_negative,
    dropout_layers,
    make_activation,
)


class BaselineCNN(ZooModel):
    """Conv3(width) -> depth x [Conv3(c) MaxPool Dropout] -> [Conv1x1] -> [Dense Dropout] -> Dense.

    The defaults are the study's baseline (the Keras MNIST example): Conv 32, Conv 64, MaxPool,
    Dropout 0.25, Dense 128, Dropout 0.5, Dense 10; 1,199,882 parameters. Each rung of the
    study's shrinking ladder is a set of overrides (docs/MODELS.md):

    - ``width``: first conv's channels; each block's conv gets ``c = round(growth * width)``.
    - ``depth``: number of ``conv + pool + dropout`` blocks (the study's "extra layer" is 2).
    - ``dense``: hidden dense units; None = ``4 * width`` (128 at 32), 0 = no dense layer.
    - ``pointwise``: channels of a 1x1 conv before the classifier, 0 = none.
    - ``padding``: ``valid`` (baseline) or ``same`` (needed for the ladder's 115k/39k/16k rungs).
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
        super().__init__(activation=activation, **io)
        dense = 4 * width if dense is None else check_non_negative("dense", dense)
        check_choice("padding", padding, PADDINGS)
        channels = max(1, round(growth * width))

        stack = self.conv_stack(depth=depth, padding=padding)
        stack.conv(width, 3, activation, padding=padding, where="conv 1")
        for block in range(1, depth + 1):
            stack.conv(channels, 3, activation, padding=padding, where=f"block {block}'s conv")
            stack.pool(where=f"block {block}'s pool").extend(dropout_layers(dropout_conv))
        if pointwise:
            stack.conv(pointwise, 1, activation, where="the 1x1 conv")
        body: list[nn.Module] = [*stack.layers, nn.Flatten()]
        if dense:
            body += [nn.Linear(stack.flat_features, dense), make_activation(activation)]
            self.head = nn.Sequential(
                *dropout_layers(dropout_dense), nn.Linear(dense, self.num_classes)
            )
        else:
            self.head = nn.Linear(stack.flat_features, self.num_classes)
        self.body = nn.Sequential(*body)
