"""Training: the LightningModule, its callbacks, W&B tracking and safe checkpoint loading."""
