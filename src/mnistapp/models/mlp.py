"""Fully connected networks: the MLP studies (width/depth sweeps, the 6x100 ReLU network)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mnistapp.models.base import ZooModel, check_int, dropout_layers, make_activation


class MLP(ZooModel):
    """Flatten -> [Linear act Dropout] per size in ``hidden`` (or ``[width] * depth``) -> Linear.

    ``last_activation`` replaces the last hidden layer's; ``init="keras"``: Glorot uniform weights.
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
        super().__init__(**io)
        if init not in ("torch", "keras"):
            raise ValueError(f"init must be torch or keras, got {init!r}")
        sizes = [width] * depth if hidden is None else list(hidden)
        if not sizes:
            raise ValueError("hidden must list at least one layer width, got []")
        acts = [(activation, "activation")] * len(sizes)
        if last_activation is not None:
            acts[-1] = (last_activation, "last_activation")
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = self.in_channels * self.image_size**2
        for i, (size, act) in enumerate(zip(sizes, acts, strict=True)):
            if i:  # dropout follows every hidden layer; the last one's sits in the head
                layers += dropout_layers(dropout)
            layers += [nn.Linear(n_in, check_int(f"hidden[{i}]", size)), make_activation(*act)]
            n_in = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(*dropout_layers(dropout), nn.Linear(n_in, self.num_classes))
        if init == "keras":
            # PyTorch's default is about 2.4x narrower for 784 -> 32: deep sigmoid stacks then
            # barely learn in a few epochs of plain SGD, where Keras' do
            for layer in (m for m in self.modules() if isinstance(m, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
