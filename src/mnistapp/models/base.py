"""What the model zoo shares: the base class, knob checks and a conv-stack builder (torch only)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class ZooModel(nn.Module):
    """Base of every zoo model: subclasses build ``body`` (images -> ``[B, D]``) and ``head``."""

    body: nn.Module
    head: nn.Module

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes)
        self.in_channels = check_int("in_channels", in_channels)
        self.image_size = check_int("image_size", image_size)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``[B, D]`` (what t-SNE plots embed)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Raw logits ``[B, num_classes]`` (no softmax) for images ``[B, C, H, W]``."""
        return self.head(self.features(x))

    @property
    def first_conv(self) -> nn.Conv2d | None:
        """The first ``nn.Conv2d`` (whose kernels get plotted), or None for a conv-free model."""
        return next((m for m in self.modules() if isinstance(m, nn.Conv2d)), None)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` as Keras counts them: ``total`` adds frozen ones and float buffers."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    stats = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return trainable, sum(p.numel() for p in module.parameters()) + stats


def check_int(name: str, value: int, low: int = 1) -> int:
    """``value`` if it is an int >= ``low``, else ValueError naming the knob."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else ValueError listing them."""
    if value not in list(choices):  # a list, so an unhashable value is refused, not a TypeError
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def scaled(base: int, width: int, reference: int) -> int:
    """``base`` units scaled by ``width / reference`` (the published width), rounded, >= 1."""
    return max(1, round(base * width / reference))


def make_activation(name: str, knob: str = "activation") -> nn.Module:
    """A fresh activation module by name (``relu | sigmoid | tanh | leaky_relu``)."""
    return ACTIVATIONS[check_choice(knob, name, ACTIVATIONS)]()


def dropout_layers(p: float) -> list[nn.Module]:
    """``[nn.Dropout(p)]``, or nothing when ``p`` is 0 (keeps printed models honest)."""
    return [nn.Dropout(p)] if p > 0 else []


class ConvStack:
    """Collects ``model``'s conv layers, tracking channels and the map's side (errors name it)."""

    def __init__(self, model: ZooModel, **knobs: object) -> None:
        self.layers: list[nn.Module] = []
        self.channels, self.size = model.in_channels, model.image_size
        knobs = {"image_size": model.image_size, **knobs}
        self.context = f"{type(model).__name__} with " + ", ".join(
            f"{k}={v!r}" for k, v in knobs.items()
        )

    def _resize(self, size: int, where: str) -> None:
        if size < 1:
            raise ValueError(
                f"{self.context}: the feature map would shrink below 1x1 at {where} (side "
                f"{size}); use a larger image_size or fewer/smaller layers"
            )
        self.size = size

    def conv(
        self,
        channels: int,
        kernel: int,
        act: str | None = "relu",
        *,
        padding: str = "valid",
        batch_norm: bool = False,
        modules: Sequence[nn.Module] = (),
        where: str = "a conv",
    ) -> ConvStack:
        """Append ``Conv2d [BatchNorm2d] [act]`` (or ``modules``, stride 1, in the conv's place)."""
        check_choice("padding", padding, ("valid", "same"))
        self._resize(self.size if padding == "same" else self.size - kernel + 1, where)
        pad = kernel // 2 if padding == "same" else 0  # odd kernels, stride 1: Keras' "same"
        # the conv keeps its bias before BatchNorm, as Keras' does: parameter counts match Keras'
        self.layers += modules or [nn.Conv2d(self.channels, channels, kernel, padding=pad)]
        self.layers += [nn.BatchNorm2d(channels)] if batch_norm else []
        self.layers += [make_activation(act)] if act else []
        self.channels = channels
        return self

    def pool(self, kind: str = "max", where: str = "a pool") -> ConvStack:
        """Append a 2x2, stride-2 pool (floor division, as in Keras and PyTorch)."""
        self._resize(self.size // 2, where)
        self.layers.append(POOLS[check_choice("pool", kind, POOLS)](2))
        return self

    def dense(self, units: int, act: str) -> ConvStack:
        """Append ``Flatten -> Linear(units) -> act``, a hidden dense layer on the map."""
        self.layers += [nn.Flatten(), nn.Linear(self.flat_features, units), make_activation(act)]
        self.channels, self.size = units, 1
        return self

    @property
    def flat_features(self) -> int:
        """Length of the flattened map."""
        return self.channels * self.size * self.size
