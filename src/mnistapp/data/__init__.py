"""Data: verified IDX ``sources``, the tensor-resident ``datamodule``, your own digit files
(``inputs``) and ``transforms`` (normalize, augment). Nothing is imported here, so ``predict``
reads images without loading Lightning."""
