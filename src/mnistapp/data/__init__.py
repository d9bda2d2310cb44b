"""Data: verified MNIST sources and the tensor-resident DataModule."""

from mnistapp.data.datamodule import MNISTDataModule, TensorBatchLoader
from mnistapp.data.sources import DataSourceError, ensure_mnist

__all__ = ["DataSourceError", "MNISTDataModule", "TensorBatchLoader", "ensure_mnist"]
