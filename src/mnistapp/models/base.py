"""Building blocks shared by the model zoo: the base class, knob checks, layer helpers.

Nothing here imports Lightning or Hydra: every model is a plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}
PADDINGS = ("valid", "same")
POOLS: dict[str, Callable[[int], nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class ZooModel(nn.Module):
    """Base of every zoo model: ``forward(x) = head(features(x))``.

    Subclasses take their own knobs and pass the rest (``num_classes``, ``in_channels``,
    ``image_size``: what the data config says) to this constructor, which checks them with the
    ``activation`` name before anything is built. They then build ``self.body`` (image -> flat
    penultimate features ``[B, D]``) and ``self.head`` (features -> raw logits
    ``[B, num_classes]``; no softmax, the loss owns it).
    """

    body: nn.Module
    head: nn.Module

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        self.image_size = check_positive("image_size", image_size)
        if activation is not None:
            check_choice("activation", activation, tuple(ACTIVATIONS))

    def conv_stack(self, **knobs: object) -> ConvStack:
        """A :class:`ConvStack` on this model's input; its errors name the model and ``knobs``."""
        context = {"image_size": self.image_size, **knobs}
        described = ", ".join(f"{k}={v!r}" for k, v in context.items())
        return ConvStack(
            self.in_channels, self.image_size, f"{type(self).__name__} with {described}"
        )

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``[B, D]`` (what t-SNE plots embed)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Raw logits ``[B, num_classes]`` for images ``[B, C, H, W]``."""
        return self.head(self.features(x))

    @property
    def first_conv(self) -> nn.Conv2d | None:
        """The first ``nn.Conv2d`` (whose kernels get plotted), or None for a conv-free model."""
        return next((m for m in self.modules() if isinstance(m, nn.Conv2d)), None)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """Return ``(trainable, total)`` numbers of parameters, counted the way Keras does.

    ``trainable`` counts parameters with ``requires_grad``. ``total`` adds frozen parameters and
    the floating-point buffers (BatchNorm's running mean and variance), which Keras reports as
    "non-trainable params"; this keeps our counts comparable with the published Keras ones.
    Integer buffers (BatchNorm's ``num_batches_tracked`` counter) are not weights and not counted.
    """
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    stats = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return trainable, trainable + frozen + stats


# --- knob checks: bad values fail at construction with the knob's name, not deep in forward ---


def check_positive(name: str, value: int) -> int:
    """``value`` if it is an int >= 1, else ValueError naming the knob."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_non_negative(name: str, value: int) -> int:
    """``value`` if it is an int >= 0 (0 switches the layer off), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (0 = none), got {value!r}")
    return value


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def scaled(base: int, width: int, reference: int) -> int:
    """``base`` units scaled by ``width / reference`` (the published width), rounded, >= 1."""
    return max(1, round(base * width / reference))


def make_activation(name: str, knob: str = "activation") -> nn.Module:
    """A fresh activation module by name (``relu | sigmoid | tanh | leaky_relu``)."""
    return ACTIVATIONS[check_choice(knob, name, tuple(ACTIVATIONS))]()


def dropout_layers(p: float) -> list[nn.Module]:
    """``[nn.Dropout(p)]``, or nothing when ``p`` is 0 (keeps printed models honest)."""
    return [nn.Dropout(p)] if p > 0 else []


# --- conv stacks: sizes are known at construction, so Linear layers need no laziness ---


def conv_layers(
    in_channels: int,
    out_channels: int,
    kernel: int,
    act: str | None = "relu",
    *,
    padding: str = "valid",
    batch_norm: bool = False,
) -> list[nn.Module]:
    """``Conv2d [-> BatchNorm2d] [-> activation]``; ``padding`` is Keras' ``valid | same``.

    Convolutions keep their bias even before BatchNorm, as Keras' defaults do, so parameter
    counts match the published (Keras) models.
    """
    pad = kernel // 2 if padding == "same" else 0  # odd kernels, stride 1: Keras' "same"
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, padding=pad)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    if act is not None:
        layers.append(make_activation(act))
    return layers


class ConvStack:
    """Collects conv-net layers while tracking channels and the feature map's side length.

    A layer that would shrink the map below 1x1 raises ValueError at construction, prefixed
    with ``context`` (the knobs that decide the size, e.g. ``"image_size=8, depth=3"``).
    """

    def __init__(self, in_channels: int, image_size: int, context: str) -> None:
        self.layers: list[nn.Module] = []
        self.channels = in_channels
        self.size = image_size
        self.context = context

    def _resize(self, size: int, where: str) -> None:
        if size < 1:
            raise ValueError(
                f"{self.context}: the feature map would shrink below 1x1 at {where} (side "
                f"{size}); use a larger image_size or fewer/smaller layers"
            )
        self.size = size

    def add(
        self, *modules: nn.Module, channels: int, kernel: int, padding: str = "valid", where: str
    ) -> ConvStack:
        """Append stride-1 conv-like ``modules`` that output ``channels`` maps."""
        self._resize(self.size if padding == "same" else self.size - kernel + 1, where)
        self.layers += modules
        self.channels = channels
        return self

    def conv(
        self,
        channels: int,
        kernel: int,
        act: str | None = "relu",
        *,
        padding: str = "valid",
        batch_norm: bool = False,
        where: str = "a conv",
    ) -> ConvStack:
        """Append ``conv_layers(...)`` from the current channel count."""
        layers = conv_layers(
            self.channels, channels, kernel, act, padding=padding, batch_norm=batch_norm
        )
        return self.add(*layers, channels=channels, kernel=kernel, padding=padding, where=where)

    def pool(self, kind: str = "max", where: str = "a pool") -> ConvStack:
        """Append a 2x2, stride-2 pool (floor division, as in Keras and PyTorch)."""
        self._resize(self.size // 2, where)
        self.layers.append(POOLS[kind](2))
        return self

    def extend(self, modules: list[nn.Module]) -> ConvStack:
        """Append shape-preserving modules (dropout, activations)."""
        self.layers += modules
        return self

    @property
    def flat_features(self) -> int:
        """Length of the flattened map."""
        return self.channels * self.size * self.size
