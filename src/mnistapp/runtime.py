"""Where this process stands: its DDP rank and whether Hydra runs it as a multirun job.

Light on imports (Lightning and Hydra are imported inside), since every entry point uses it.
"""

from __future__ import annotations


def is_rank_zero() -> bool:
    """True in the process that owns the run's files (rank 0 under DDP)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def is_multirun() -> bool:
    """True inside a Hydra multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra run (``model`` -> ``lenet``)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
