"""The model zoo: plain ``nn.Module`` classifiers, each built by ``conf/model/<name>.yaml``
(see docs/MODELS.md and :class:`ZooModel`)."""

from mnistapp.models.base import ZooModel, count_parameters
from mnistapp.models.baseline import BaselineCNN
from mnistapp.models.cnn import DeeperCNN, FastCNN
from mnistapp.models.compact import Conv10k, InceptionCNN, SeparableCNN
from mnistapp.models.lenet import LeNet5
from mnistapp.models.mlp import MLP
from mnistapp.models.pareto import SeparableNet

__all__ = ["MLP", "BaselineCNN", "Conv10k", "DeeperCNN", "FastCNN", "InceptionCNN", "LeNet5"]
__all__ += ["SeparableCNN", "SeparableNet", "ZooModel", "count_parameters"]
