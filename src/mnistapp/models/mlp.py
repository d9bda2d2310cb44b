"""Fully connected networks: the MLP studies (width/depth sweeps, the 6x100 ReLU network)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mnistapp.models.base import (
    ZooModel,
    check_positive,
    dropout_layers,
    make_activation,
)


class MLP(ZooModel):
    """Flatten -> ``[Linear -> activation -> Dropout]`` per hidden layer -> Linear.

    Hidden sizes come from ``hidden`` (a list) or, when it is None, ``[width] * depth``. The
    default (one hidden layer of 32 sigmoid units) is study A's smallest network: 25,450
    parameters on 28x28. ``io``: ``num_classes``, ``in_channels``, ``image_size`` (ZooModel).
    ``last_activation`` replaces the activation of the last hidden layer
    only (study B: five ReLU layers of 100, then a LeakyReLU one). ``init="keras"`` draws the
    weights as Keras' ``Dense`` does (Glorot uniform, zero biases) instead of PyTorch's default,
    for the Keras studies: it matters for stacked sigmoids.
    """

    def __init__(
        self,
        width: int = 32,
        depth: int = 1,
        hidden: Sequence[int] | None = None,
        activation: str = "sigmoid",
        last_activation: str | None = None,
        dropout: float = 0.0,
        init: str = "torch",
        **io: int,
    ) -> None:
        super().__init__(activation=activation, **io)
        if init not in ("torch", "keras"):
            raise ValueError(f"init must be torch or keras, got {init!r}")
        sizes = [width] * depth if hidden is None else list(hidden)
        if not sizes:
            raise ValueError("hidden must list at least one layer width, got []")
        for i, size in enumerate(sizes):
            check_positive(f"hidden[{i}]", size)
        names = [activation] * len(sizes)
        knobs = ["activation"] * len(sizes)
        if last_activation is not None:
            names[-1], knobs[-1] = last_activation, "last_activation"

        layers: list[nn.Module] = [nn.Flatten()]
        n_in = self.in_channels * self.image_size**2
        for i, (size, name, knob) in enumerate(zip(sizes, names, knobs, strict=True)):
            if i:  # dropout follows every hidden layer; the last one's sits in the head
                layers += dropout_layers(dropout)
            layers += [nn.Linear(n_in, size), make_activation(name, knob)]
            n_in = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(*dropout_layers(dropout), nn.Linear(n_in, self.num_classes))
        if init == "keras":
            # PyTorch's default is about 2.4x narrower for 784 -> 32: deep sigmoid stacks then
            # barely learn in a few epochs of plain SGD, where Keras' do
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
