"""Data: verified MNIST sources, the tensor-resident DataModule, user-image inputs, normalize.

- ``sources``: materialise the four official IDX files, verified, offline first.
- ``datamodule``: ``MNISTDataModule`` and its ``TensorBatchLoader`` (batches by slicing).
- ``inputs``: your own digit files (images, ``.npy``, IDX) as MNIST-style arrays.
- ``transforms``: ``normalize``, the one pixel transform every path shares.

Nothing is imported here, so ``predict`` reads images without loading Lightning.
"""
