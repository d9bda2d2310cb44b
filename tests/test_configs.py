"""Every shipped config composes: experiments, models, schedulers, trainers (no training here)."""

from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from mnistapp.models import count_parameters

CONF = files("mnistapp.conf")


def _options(group: str) -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in CONF.joinpath(group).iterdir()
        if p.name.endswith(".yaml")
    )


def _compose(*overrides: str):
    with initialize_config_module("mnistapp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("name", _options("experiment"))
def test_experiment_composes_and_builds(name: str) -> None:
    cfg = _compose(f"experiment={name}")
    net = instantiate(cfg.model)
    trainable, _ = count_parameters(net)
    assert trainable > 0
    assert instantiate(cfg.optimizer)(params=net.parameters()).param_groups[0]["lr"] > 0
    assert cfg.tags, f"experiment {name} should tag its runs"


def test_default_is_lenet_sgd_ten_epochs() -> None:
    cfg = _compose()
    assert cfg.model._target_.endswith("LeNet5") and cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.trainer.max_epochs == 10 and cfg.data.val_size == 5000


@pytest.mark.parametrize("name", _options("scheduler"))
def test_schedulers_compose(name: str) -> None:
    cfg = _compose(f"scheduler={name}")
    if name == "none":
        assert not cfg.get("scheduler")
    else:
        assert cfg.scheduler._partial_ is True and "scheduler" not in cfg.scheduler  # flat


@pytest.mark.parametrize("name", _options("trainer"))
def test_trainers_compose(name: str) -> None:
    cfg = _compose(f"trainer={name}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
