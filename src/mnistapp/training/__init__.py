"""Training: the LightningModule, its callbacks, W&B tracking and safe checkpoint loading."""

from mnistapp.errors import DivergedError

__all__ = ["DivergedError"]
