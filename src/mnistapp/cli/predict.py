"""``mnistapp-predict ckpt_path=<file> inputs=<file|dir|glob>``: your digits' classes, as CSV."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from omegaconf import DictConfig

from mnistapp.cli.task import entry_point, run_on_checkpoint
from mnistapp.data.inputs import InputError, find_inputs, read_digits
from mnistapp.files import atomic_write

if TYPE_CHECKING:
    from mnistapp.training.checkpoints import Restored

log = logging.getLogger(__name__)

RESULT_KEYS = ("model", "images", "skipped", "predictions")


def read_inputs(cfg: DictConfig, restored: Restored) -> dict[str, Any]:
    """The digits of ``cfg.inputs`` at the checkpoint's image size, and the files skipped."""
    if not cfg.get("inputs"):
        raise InputError("no inputs given: add inputs=<file|dir|glob>")
    named, skipped = [], {}
    for path in find_inputs(cfg.inputs):
        try:
            named += read_digits(path, restored.image_size)
        except InputError as err:  # reported and skipped, not fatal
            skipped[str(path)] = str(err)
            log.warning("Skipping %s: %s", path, err)
    if not named:
        raise InputError(f"no digits could be read from inputs={cfg.inputs}")
    return {"named": named, "skipped": skipped}


def predict(
    cfg: DictConfig, restored: Restored, named: list[tuple[str, Any]], skipped: dict[str, str]
) -> dict[str, Any]:
    """Classify the ``(name, uint8 image)`` digits; write ``predictions.csv``; return the record."""
    import torch

    names, images = zip(*named, strict=True)
    images = torch.from_numpy(np.stack(images))
    net = restored.module.net.eval()
    with torch.inference_mode():
        probs = torch.cat(
            [net(restored.normalize(chunk)).softmax(1) for chunk in images.split(cfg.batch_size)]
        )
    top_probs, top_classes = probs.topk(min(3, probs.shape[1]), dim=1)
    class_names = restored.module.class_names  # saved in the checkpoint (digits when not)
    rows = [
        {
            "file": name,
            "prediction": int(classes[0]),
            "class": class_names[int(classes[0])],
            "probability": round(float(p[0]), 4),
            "top3": " ".join(f"{int(c)}:{float(q):.4f}" for c, q in zip(classes, p, strict=True)),
        }
        for name, classes, p in zip(names, top_classes, top_probs, strict=True)
    ]
    out = Path(cfg.paths.output_dir) / "predictions.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out, text.getvalue().encode())
    shown = text.getvalue().splitlines()[: cfg.print_rows + 1]
    if len(rows) > cfg.print_rows:
        shown.append(f"... {len(rows) - cfg.print_rows} more rows in {out}")
    print("\n".join(shown), flush=True)
    return {
        "model": restored.model_name,
        "ckpt_path": str(restored.path),
        "images": len(rows),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "predictions": str(out),
    }


@hydra.main(version_base="1.3", config_path="pkg://mnistapp.conf", config_name="predict")
def hydra_main(cfg: DictConfig) -> None:
    """``mnistapp-predict ckpt_path=<file> inputs=<file|dir|glob>``."""
    run_on_checkpoint("predict", predict, cfg, RESULT_KEYS, read_inputs, errors=(InputError,))


main = entry_point("predict", hydra_main)

if __name__ == "__main__":
    main()
