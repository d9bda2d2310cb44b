"""The zoo's contracts beyond counts: checkpoint key names and where knobs are checked."""

from __future__ import annotations

import pytest
from torch import nn

from mnistapp.models import MLP, BaselineCNN, Conv10k, InceptionCNN, SeparableCNN, SeparableNet

# Checkpoints store weights by these names: renaming a submodule would break every saved run.
KEYS = {
    SeparableCNN: ["body.0.0.weight", "body.0.1.weight", "body.0.1.bias", "body.1.weight"],
    SeparableNet: ["body.0.weight", "body.1.weight", "body.1.bias", "body.4.weight"],
    InceptionCNN: [
        "body.0.branches.0.weight",
        "body.0.branches.0.bias",
        "body.0.branches.1.weight",
    ],
    Conv10k: ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias"],
    BaselineCNN: ["head.1.weight", "head.1.bias", "body.0.weight", "body.0.bias"],
    MLP: ["body.1.weight", "body.1.bias", "head.0.weight", "head.0.bias"],
}


@pytest.mark.parametrize("cls", KEYS, ids=lambda c: c.__name__)
def test_state_dict_names_are_stable(cls: type[nn.Module]) -> None:
    keys = [k for k in cls().state_dict() if "running" not in k and "num_batches" not in k]
    assert keys[: len(KEYS[cls])] == KEYS[cls]


def test_pareto_convs_carry_no_bias_and_separable_ones_do() -> None:
    pareto = [m for m in SeparableNet().modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.bias is None for conv in pareto)
    depthwise, pointwise = SeparableCNN().body[3]  # the second, 12 -> 16 channels
    assert (
        depthwise.bias is None
        and depthwise.groups == depthwise.in_channels
        and pointwise.bias is not None
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "swish", "last_activation": "relu", "depth": 2}, "^activation must"),
        ({"activation": "relu", "last_activation": "swish", "depth": 2}, "^last_activation must"),
    ],
)
def test_mlp_names_the_activation_knob_at_fault(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MLP(**kwargs)
