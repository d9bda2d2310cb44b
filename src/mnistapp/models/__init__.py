"""The model zoo: plain ``nn.Module`` classifiers built by ``conf/model/<name>.yaml``."""

from mnistapp.models.base import ZooModel, count_parameters
from mnistapp.models.baseline import BaselineCNN
from mnistapp.models.cnn import DeeperCNN, FastCNN, LeNet5
from mnistapp.models.compact import Conv10k, InceptionCNN, SeparableCNN, SeparableNet
from mnistapp.models.mlp import MLP

__all__ = ["MLP", "BaselineCNN", "Conv10k", "DeeperCNN", "FastCNN", "InceptionCNN", "LeNet5"]
__all__ += ["SeparableCNN", "SeparableNet", "ZooModel", "count_parameters"]
