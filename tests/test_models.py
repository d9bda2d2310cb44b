"""The model zoo: configs build the classes, counts match docs/MODELS.md and the publications."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from mnistapp.models import (
    MLP,
    BaselineCNN,
    Conv10k,
    DeeperCNN,
    FastCNN,
    InceptionCNN,
    LeNet5,
    SeparableCNN,
    SeparableNet,
    count_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "conf" / "model"
DOCS = ROOT / "docs" / "MODELS.md"
NAMES = [
    "mlp",
    "lenet",
    "cnn",
    "fast_cnn",
    "baseline_cnn",
    "tiny_cnn",
    "conv_10k",
    "separable",
    "inception",
    "pareto",
]
CLASSES = [
    MLP,
    LeNet5,
    DeeperCNN,
    FastCNN,
    BaselineCNN,
    Conv10k,
    SeparableCNN,
    InceptionCNN,
    SeparableNet,
]
MNIST = {"num_classes": 10, "channels": 1, "image_size": 28}


def build(
    name: str, data: dict[str, int] | None = None, overrides: Sequence[str] = ()
) -> nn.Module:
    """Instantiate ``conf/model/<name>.yaml`` as Hydra would, with ``data.*`` filled in."""
    cfg = OmegaConf.merge(
        {"data": data or MNIST},
        {"model": OmegaConf.load(CONFIGS / f"{name}.yaml")},
        OmegaConf.from_dotlist(list(overrides)),
    )
    return instantiate(cfg.model)


def count(text: str) -> int:
    return int(text.replace(",", ""))


def docs_table(heading: str) -> list[list[str]]:
    """Body rows (cells stripped) of the first table after ``heading`` in docs/MODELS.md."""
    lines = DOCS.read_text().split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:  # skip the header and the --- row
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def documented_counts() -> dict[str, tuple[int, int]]:
    """``{config: (trainable, total)}`` from the table in docs/MODELS.md."""
    table = docs_table("# Models")
    counts = {}
    for cells in table:
        trainable, total = cells[2].split("/")
        counts[cells[0].strip("`")] = (count(trainable), count(total))
    return counts


def test_every_config_is_documented_and_present() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(NAMES)
    assert sorted(documented_counts()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_default_count_matches_docs(name: str) -> None:
    assert count_parameters(build(name)) == documented_counts()[name]


@pytest.mark.parametrize(
    ("model", "trainable", "total"),
    [
        (MLP(), 25_450, 25_450),  # study A: 32 sigmoid units
        (LeNet5(), 44_426, 44_426),
        (BaselineCNN(), 1_199_882, 1_199_882),  # the Keras MNIST example
        (Conv10k(), 8_580, 8_640),
        (build("tiny_cnn"), 841, 841),  # BaselineCNN with the study's smallest knobs
    ],
    ids=["mlp", "lenet", "baseline_cnn", "conv_10k", "tiny_cnn"],
)
def test_published_exact_counts(model: nn.Module, trainable: int, total: int) -> None:
    assert count_parameters(model) == (trainable, total)


@pytest.mark.parametrize(
    ("model", "trainable", "total"),
    [(SeparableCNN(), 4_879, 4_967), (InceptionCNN(), 3_077, 3_077)],
    ids=["separable", "inception"],
)
def test_published_counts_within_5_percent(model: nn.Module, trainable: int, total: int) -> None:
    got_trainable, got_total = count_parameters(model)
    assert got_trainable == pytest.approx(trainable, rel=0.05)
    assert got_total == pytest.approx(total, rel=0.05)


def test_batchnorm_statistics_count_as_non_trainable() -> None:
    bn = nn.BatchNorm2d(7)
    assert count_parameters(bn) == (14, 28)  # gamma, beta; + running mean, var (not the counter)
    frozen = nn.Linear(3, 2).requires_grad_(False)
    assert count_parameters(frozen) == (0, 8)


LADDER = docs_table("## The `baseline_cnn` shrinking ladder")


@pytest.mark.parametrize("row", LADDER, ids=[row[0] for row in LADDER])
def test_baseline_ladder_rungs(row: list[str]) -> None:
    """Each documented override line gives the documented count, near the write-up's."""
    _, overrides, params, writeup = row
    dotlist = [tok for tok in overrides.strip("`").split() if tok.startswith("model.")]
    trainable, total = count_parameters(build("baseline_cnn", overrides=dotlist))
    assert trainable == total == count(params)
    approx = re.match(r"([\d,]+)k,", writeup)
    if approx:  # the write-up rounds to thousands
        assert trainable == pytest.approx(count(approx.group(1)) * 1000, rel=0.05)


def test_ladder_third_rung_needs_same_padding() -> None:
    # Why the docs add padding=same: with valid padding the 3-block rung is far from 115k.
    assert count_parameters(BaselineCNN(width=16, depth=2))[0] < 0.6 * 115_000


@pytest.mark.parametrize("name", NAMES)
def test_forward_features_and_first_conv(name: str) -> None:
    model = build(name).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
        assert logits.shape == (3, 10)
        assert feats.ndim == 2 and feats.shape[0] == 3
        assert torch.equal(model.head(feats), logits)  # forward = head(features)
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in model.modules())
    if name == "mlp":
        assert model.first_conv is None
    else:
        assert isinstance(model.first_conv, nn.Conv2d)
        assert model.first_conv.in_channels == 1


@pytest.mark.parametrize("name", NAMES)
def test_data_config_reaches_the_model(name: str) -> None:
    model = build(name, {"num_classes": 5, "channels": 3, "image_size": 32}).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_width_scales_the_model(cls: type[nn.Module]) -> None:
    width = inspect.signature(cls).parameters["width"].default
    default = count_parameters(cls())[0]
    assert count_parameters(cls(width=2 * width))[0] > default
    assert count_parameters(cls(width=max(1, width // 2)))[0] < default


def test_mlp_width_depth_count_formula() -> None:
    model = build("mlp", overrides=["model.width=64", "model.depth=2"])
    assert count_parameters(model)[0] == (784 * 64 + 64) + (64 * 64 + 64) + (64 * 10 + 10)
    hidden = MLP(hidden=[100] * 6, activation="relu", last_activation="leaky_relu")
    assert count_parameters(hidden)[0] == 784 * 100 + 100 + 5 * (100 * 100 + 100) + 1010
    acts = [type(m) for m in hidden.body if not isinstance(m, (nn.Linear, nn.Flatten))]
    assert acts == [nn.ReLU] * 5 + [nn.LeakyReLU]


def test_lenet_width_and_variants() -> None:
    assert count_parameters(LeNet5(width=12))[0] > count_parameters(LeNet5())[0]
    relu_max = LeNet5(activation="relu", pool="max")
    kinds = {type(m) for m in relu_max.modules()}
    assert {nn.ReLU, nn.MaxPool2d} <= kinds and not {nn.Tanh, nn.AvgPool2d} & kinds


def test_dropout_is_absent_when_zero_and_placed_when_set() -> None:
    assert not any(isinstance(m, nn.Dropout) for m in MLP(depth=3).modules())
    drops = [m.p for m in MLP(depth=3, dropout=0.2).modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.2] * 3
    rates = sorted(m.p for m in BaselineCNN().modules() if isinstance(m, nn.Dropout))
    assert rates == [0.25, 0.5]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        *[(cls, {"activation": "swish"}, "activation must be one of") for cls in CLASSES],
        (MLP, {"hidden": []}, "hidden must list at least one layer"),
        (MLP, {"hidden": [32, 0]}, r"hidden\[1\] must be an integer >= 1"),
        (MLP, {"last_activation": "gelu"}, "last_activation must be one of"),
        (LeNet5, {"pool": "min"}, "pool must be one of"),
        (LeNet5, {"image_size": 12}, "image_size=12.* below 1x1"),
        (BaselineCNN, {"padding": "full"}, "padding must be one of"),
        (BaselineCNN, {"dense": -1}, "dense must be an integer >= 0"),
        (BaselineCNN, {"depth": 4}, r"image_size=28, depth=4.* below 1x1 at block 4's conv"),
        (DeeperCNN, {"dense": 0}, "dense must be an integer >= 1"),
        (Conv10k, {"image_size": 16}, "image_size=16.* below 1x1 at the classifier"),
        (SeparableCNN, {"in_channels": 0}, "in_channels must be an integer >= 1"),
        (InceptionCNN, {"num_classes": 0}, "num_classes must be an integer >= 1"),
        (SeparableNet, {"padding": "full"}, "padding must be one of"),
        (SeparableNet, {"pools": -1}, "pools must be an integer >= 0"),
        (
            SeparableNet,
            {"pools": 0, "padding": "valid", "channels": [8] * 14},
            "below 1x1 at stage 14",
        ),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_bad_knobs_raise(cls: type[nn.Module], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_tiny_cnn_too_deep_names_the_knobs() -> None:
    # Hydra wraps the model's ValueError in its InstantiationException
    with pytest.raises(InstantiationException, match=r"image_size=28, depth=5.* below 1x1"):
        build("tiny_cnn", overrides=["model.depth=5"])


def test_mlp_keras_init_is_glorot_uniform_with_zero_biases() -> None:
    torch.manual_seed(0)
    keras, default = MLP(init="keras"), MLP()
    first_keras, first_default = keras.body[1], default.body[1]  # Linear(784, 32)
    bound = (6 / (784 + 32)) ** 0.5
    assert first_keras.weight.abs().max() <= bound
    assert first_keras.weight.abs().max() > 0.9 * bound  # fills its range, unlike the default
    assert first_default.weight.abs().max() <= 1 / 28  # PyTorch: 1 / sqrt(fan_in)
    assert all(m.bias.eq(0).all() for m in keras.modules() if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="init must be torch or keras"):
        MLP(init="he")


@pytest.mark.parametrize(
    ("experiment", "budget", "floor"),
    [
        ("pareto_841", 841, 0.8),
        ("pareto_3077", 3077, 0.8),
        ("pareto_4967", 4967, 0.8),
        ("pareto_8640", 8640, 0.8),
        ("pareto_baseline", 1_199_882, 0),  # beats the baseline far inside its budget
    ],
)
def test_pareto_models_fit_their_budgets(experiment: str, budget: int, floor: float) -> None:
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("mnistapp.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    net = instantiate(cfg.model)
    _, total = count_parameters(net)  # Keras-style: BatchNorm statistics count too
    assert floor * budget < total <= budget, total
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    from mnistapp.reporting.reproduction import load_claims

    assert budget in {point.published_params for point in load_claims([experiment])}


def test_separable_net_pools_only_its_first_stages() -> None:
    # pareto_841's shape: one pool after the stem, then valid-padded stages 14 -> 12 -> 10 -> 8 -> 6
    net = SeparableNet(width=6, stem=6, channels=[6, 9, 9, 9], pools=1, padding="valid")
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 1
    assert net.body[:-2](torch.zeros(2, 1, 28, 28)).shape == (2, 9, 6, 6)
    assert sum(isinstance(m, nn.MaxPool2d) for m in SeparableNet(channels=[8, 8]).modules()) == 2


def test_pareto_baselines_budget_is_the_baseline_it_beats() -> None:
    from hydra import compose, initialize_config_module

    with initialize_config_module("mnistapp.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=pareto_baseline"])
        baseline = compose("config", overrides=["experiment=baseline_cnn"])
    assert count_parameters(instantiate(baseline.model))[1] == 1_199_882
    assert cfg.data.augment is not None
