"""``python -m mnistapp.predict ckpt_path=<file> inputs=<file|dir|glob>``: classify your digits.

Images (PNG, JPEG, BMP, ... of any size and colour) are converted the way MNIST was made: grey,
white digit on black (inverted when the background is light), the digit's bounding box fitted
into 20x20 keeping its aspect ratio, then placed so its centre of mass sits at the centre of the
28x28 field. ``.npy`` arrays and IDX files (``*-ubyte``, ``*.idx*``) are taken as MNIST images
already (28x28, white on black, 0..255 or 0..1). Files that cannot be read are reported and
skipped. Predictions go to ``predictions.csv`` in the run directory and are printed.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from omegaconf import DictConfig

from mnistapp.files import atomic_write
from mnistapp.results import run_task, user_errors

if TYPE_CHECKING:
    from PIL import Image

    from mnistapp.checkpoints import Restored

log = logging.getLogger(__name__)

RESULT_KEYS = ("model", "images", "skipped", "predictions")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SIZE, BOX = 28, 20  # MNIST: a 20x20 digit box centred by mass in a 28x28 field
INK = 0.1  # pixels above this share of the full range count as the digit (ignores faint noise)


class InputError(ValueError):
    """An input file could not be read as digits (reported, then skipped)."""


# --- finding and reading inputs -------------------------------------------------------------


def _is_idx(path: Path) -> bool:
    return path.name.endswith("-ubyte") or path.suffix.startswith(".idx")


def _readable_kind(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | {".npy"} or _is_idx(path)


def find_inputs(inputs: str | Iterable[str]) -> list[Path]:
    """Files named by ``inputs``: files, directories (their digit files, sorted) or globs."""
    specs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    found: list[Path] = []
    for spec in map(str, specs):
        path = Path(spec).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _readable_kind(p))
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            if not matches:
                raise InputError(f"no file matches inputs={spec}")
            found += [p for p in matches if p.is_file()]
    return list(dict.fromkeys(found))  # once each, in order


def mnist_like(image: Image.Image) -> np.ndarray:
    """Convert any picture of one digit into an MNIST-style uint8 ``[28, 28]`` array."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # transparent canvas: lay it on white, as a drawing app shows it
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 127:  # dark digit on a light background: make it white on black
        grey, background = 255 - grey, 255 - background
    # stretch so the background is 0 and the strongest ink 255, as in MNIST
    ink = grey.max() - background
    if ink < 32:
        raise InputError("no digit found (the image is blank or has no contrast)")
    grey = np.clip((grey - background) / ink, 0, 1)
    rows, cols = np.nonzero(grey > INK)
    box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    digit = Image.fromarray(np.uint8(np.round(grey * 255))).crop(box)
    scale = BOX / max(digit.size)
    size = (max(1, round(digit.width * scale)), max(1, round(digit.height * scale)))
    digit = digit.resize(size, Image.Resampling.LANCZOS)
    # centre of mass to pixel (14, 14), where MNIST's sit (13.99, 14.01 on average in t10k)
    mass = np.asarray(digit, dtype=np.float64)
    ys, xs = np.indices(mass.shape)
    cy, cx = (ys * mass).sum() / mass.sum(), (xs * mass).sum() / mass.sum()
    field = Image.new("L", (SIZE, SIZE))
    field.paste(digit, (round(SIZE / 2 - cx), round(SIZE / 2 - cy)))
    array = np.asarray(field, dtype=np.float32)
    return np.uint8(np.round(array * 255 / max(array.max(), 1)))


def as_mnist_array(array: np.ndarray) -> np.ndarray:
    """Check and convert MNIST-format images (``[H, W]``, ``[N, H, W]`` or ``[N, 1, H, W]``)."""
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (SIZE, SIZE):
        raise InputError(f"expected 28x28 images, got an array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "biuf" or not np.isfinite(array).all():
        raise InputError(f"expected pixel values, got {array.dtype}")
    low, high = float(array.min(initial=0)), float(array.max(initial=0))
    if low < 0 or high > 255:
        raise InputError(f"pixel values must lie in 0..1 or 0..255, got {low:g}..{high:g}")
    scale = 255.0 if array.dtype.kind in "bf" and high <= 1 else 1.0
    return np.uint8(np.round(array.astype(np.float64) * scale))


def read_digits(path: Path) -> list[tuple[str, np.ndarray]]:
    """``(name, uint8 [28, 28])`` for each digit in ``path``; InputError when unreadable."""
    try:
        if path.suffix.lower() == ".npy":
            # allow_pickle=False: an .npy file must not be able to run code either
            images = as_mnist_array(np.load(path, allow_pickle=False))
        elif _is_idx(path):
            from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

            tensor = read_sn3_pascalvincent_tensor(str(path), strict=False)
            if tensor.ndim == 1:
                raise InputError("an IDX label file, not images")
            images = as_mnist_array(tensor.numpy())
        else:
            from PIL import Image

            with Image.open(path) as image:
                image.load()
                return [(str(path), mnist_like(image))]
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{type(err).__name__}: {err}") from None
    if len(images) == 1:
        return [(str(path), images[0])]
    return [(f"{path}[{i}]", image) for i, image in enumerate(images)]


def iter_digits(paths: Iterable[Path], skipped: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """Every digit of every readable file; unreadable ones are logged into ``skipped``."""
    for path in paths:
        try:
            yield from read_digits(path)
        except InputError as err:
            skipped[str(path)] = str(err)
            log.warning("Skipping %s: %s", path, err)


# --- predicting ------------------------------------------------------------------------------


def predict(
    cfg: DictConfig, restored: Restored, named: list[tuple[str, Any]], skipped: dict[str, str]
) -> dict[str, Any]:
    """Classify the ``(name, uint8 image)`` digits; write ``predictions.csv``; return the record."""
    import torch

    names = [name for name, _ in named]
    images = torch.from_numpy(np.stack([image for _, image in named]))
    net = restored.module.net.eval()
    with torch.inference_mode():
        probs = torch.cat(
            [net(restored.normalize(chunk)).softmax(1) for chunk in images.split(cfg.batch_size)]
        )
    top_probs, top_classes = probs.topk(min(3, probs.shape[1]), dim=1)
    rows = [
        {
            "file": name,
            "prediction": int(classes[0]),
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
    more = len(rows) - (len(shown) - 1)
    print("\n".join(shown + ([f"... {more} more rows in {out}"] if more > 0 else [])), flush=True)
    return {
        "model": restored.model_name,
        "ckpt_path": str(restored.path),
        "images": len(rows),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "predictions": str(out),
    }


@hydra.main(version_base="1.3", config_path="pkg://mnistapp.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """``python -m mnistapp.predict ckpt_path=<file> inputs=<file|dir|glob>``."""
    from mnistapp.checkpoints import CheckpointError, restore

    skipped: dict[str, str] = {}
    with user_errors("predict", CheckpointError, InputError):
        restored = restore(cfg.get("ckpt_path"), cfg.get("model"))
        if not cfg.get("inputs"):
            raise InputError("no inputs given: add inputs=<file|dir|glob>")
        paths = find_inputs(cfg.inputs)
        named = list(iter_digits(paths, skipped))
        if not named:
            raise InputError(f"no digits could be read from inputs={cfg.inputs}")
    run_task(partial(predict, restored=restored, named=named, skipped=skipped), cfg, RESULT_KEYS)


if __name__ == "__main__":
    main()
