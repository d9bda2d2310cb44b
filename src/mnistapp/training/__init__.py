"""Training: the LightningModule, its callbacks, W&B tracking and safe checkpoint loading.

:class:`DivergedError` lives here, light to import, so the entry points can tell a diverged run
from a failed one without loading Lightning.
"""


class DivergedError(FloatingPointError):
    """Training produced a non-finite or exploding loss; the message names epoch, step and loss."""
