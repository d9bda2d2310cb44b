"""``python eval.py ckpt_path=<file>``: test a checkpoint on the test set (``data=``), with figures.

The model and its class names come from the checkpoint (``model=`` only asserts it)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from mnistapp.cli.task import entry_point, run_on_checkpoint
from mnistapp.reporting.records import scalar_metrics

if TYPE_CHECKING:
    from mnistapp.training.checkpoints import Restored

log = logging.getLogger(__name__)

RESULT_KEYS = ("model", "test/acc", "test/f1", "test/loss", "params_total", "ckpt_path")


def evaluate(cfg: DictConfig, restored: Restored) -> dict[str, Any]:
    """Test ``restored`` on the configured data; return the run record."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from mnistapp.models import count_parameters
    from mnistapp.training.callbacks import FigureWriter, MisclassifiedDigits

    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    # Normalise as in training, whatever data.mean/std say now.
    datamodule = instantiate(cfg.data, **restored.normalization)
    # the training run's per-epoch metrics, when the checkpoint still sits in its run dir
    history = restored.path.parent.parent / "csv" / "metrics.csv"
    figures = FigureWriter(
        cfg.paths.output_dir,
        tsne=cfg.plots.tsne,
        tsne_samples=cfg.plots.tsne_samples,
        history_csv=history if history.is_file() else None,
    )
    callbacks = [MisclassifiedDigits(), figures] if cfg.plots.enabled else []
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    module = restored.module
    saved = module.hparams.get("class_names")
    if saved and list(saved) != list(getattr(datamodule, "class_names", saved)):
        log.warning(
            "The checkpoint's classes (%s) are not the data's (%s): is data= the data set it was "
            "trained on? Figures and records use the checkpoint's names",
            ", ".join(saved),
            ", ".join(datamodule.class_names),
        )
    trainer.test(module, datamodule=datamodule, verbose=False)  # our result table follows
    trainable, total = count_parameters(module.net)
    return {
        "model": restored.model_name,
        "ckpt_path": str(restored.path),
        "params_trainable": trainable,
        "params_total": total,
        **scalar_metrics(trainer.callback_metrics),
        **module.test_results,
    }


@hydra.main(version_base="1.3", config_path="pkg://mnistapp.conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    """``python eval.py ckpt_path=<file> [model=<name>] [data/trainer overrides]``."""
    run_on_checkpoint("eval", evaluate, cfg, RESULT_KEYS)


main = entry_point("eval", hydra_main)

if __name__ == "__main__":
    main()
