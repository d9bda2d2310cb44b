"""Your own digits as MNIST-style arrays: pictures converted as MNIST was made (:func:`mnist_like`),
``.npy`` arrays and IDX files taken as MNIST images; an unreadable file raises InputError."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistapp.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SIZE, BOX = 28, 20  # MNIST: a 20x20 digit box centred by mass in a 28x28 field
WORK = 1024  # larger pictures are downscaled to this before any float copy is made
MAX_PIXELS = 40_000_000  # what may be decoded at full size (a 12000x12000 PNG is refused)
INK = 0.1  # pixels above this share of the full range count as the digit (ignores faint noise)


def _is_idx(path: Path) -> bool:
    return path.name.endswith("-ubyte") or path.suffix.startswith(".idx")


def find_inputs(inputs: str | Iterable[str]) -> list[Path]:
    """Files named by ``inputs``: files, directories (their digit files, sorted) or globs."""
    found: list[Path] = []
    for spec in map(str, [inputs] if isinstance(inputs, (str, Path)) else inputs):
        path = Path(spec).expanduser()
        if path.is_dir():
            readable = IMAGE_SUFFIXES | {".npy"}
            files = (p for p in path.rglob("*") if p.is_file())
            found += sorted(p for p in files if p.suffix.lower() in readable or _is_idx(p))
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            if not matches:
                raise InputError(f"no file matches inputs={spec}")
            found += [p for p in matches if p.is_file()]
    return list(dict.fromkeys(found))  # once each, in order


def mnist_like(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """A picture of one digit as MNIST was made, uint8 ``[size, size]``: grey, white on black,
    its box fitted into 20x20, centred by mass in 28x28."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # transparent canvas: lay it on white, as a drawing app shows it
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if image.mode.startswith("I"):  # 16/32-bit grey: convert("L") would clip it to white
        image = Image.fromarray(np.asarray(image, dtype=np.float32) * (255 / 65535), "F")
    elif image.mode != "F":
        image = image.convert("L")  # palette and 1-bit images through their own tables
    image.thumbnail((WORK, WORK))  # a 20-pixel digit needs no more: keeps the float copies small
    grey = np.clip(np.asarray(image, dtype=np.float32), 0, 255)
    background = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    if background > 127:  # dark digit on a light background: make it white on black
        grey, background = 255 - grey, 255 - background
    ink = grey.max() - background
    if ink < 32:
        raise InputError("no digit found (the image is blank or has no contrast)")
    grey = np.clip((grey - background) / ink, 0, 1)  # background 0, strongest ink 1, as in MNIST
    rows, cols = np.nonzero(grey > INK)
    box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    digit = Image.fromarray(np.uint8(np.round(grey * 255))).crop(box)
    scale = round(size * BOX / SIZE) / max(digit.size)
    fitted = (max(1, round(digit.width * scale)), max(1, round(digit.height * scale)))
    digit = digit.resize(fitted, Image.Resampling.LANCZOS)
    # centre of mass to pixel (14, 14), where MNIST's sit (13.99, 14.01 on average in t10k)
    mass = np.asarray(digit, dtype=np.float64)
    ys, xs = np.indices(mass.shape)
    cy, cx = (ys * mass).sum() / mass.sum(), (xs * mass).sum() / mass.sum()
    field = Image.new("L", (size, size))
    field.paste(digit, (round(size / 2 - cx), round(size / 2 - cy)))
    array = np.asarray(field, dtype=np.float32)
    return np.uint8(np.round(array * 255 / max(array.max(), 1)))


def as_mnist_array(array: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Check and convert MNIST-format images (``[H, W]``, ``[N, H, W]`` or ``[N, 1, H, W]``)."""
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (size, size):
        raise InputError(f"expected {size}x{size} images, got an array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "biuf" or not np.isfinite(array).all():
        raise InputError(f"expected pixel values, got {array.dtype}")
    low, high = float(array.min(initial=0)), float(array.max(initial=0))
    if low < 0 or high > 255:
        raise InputError(f"pixel values must lie in 0..1 or 0..255, got {low:g}..{high:g}")
    scale = 255.0 if array.dtype.kind in "bf" and high <= 1 else 1.0
    return np.uint8(np.round(array.astype(np.float64) * scale))


def read_digits(path: Path, size: int = SIZE) -> list[tuple[str, np.ndarray]]:
    """``(name, uint8 [size, size])`` for each digit in ``path``; InputError when unreadable."""
    try:
        if path.suffix.lower() == ".npy":
            # allow_pickle=False: an .npy file must not be able to run code either
            images = as_mnist_array(np.load(path, allow_pickle=False), size)
        elif _is_idx(path):
            from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

            tensor = read_sn3_pascalvincent_tensor(str(path), strict=False)
            if tensor.ndim == 1:
                raise InputError("an IDX label file, not images")
            images = as_mnist_array(tensor.numpy(), size)
        else:
            from PIL import Image

            with Image.open(path) as image:
                image.draft("L", (WORK, WORK))  # JPEG decodes at 1/2..1/8 scale, not in full
                if image.width * image.height > MAX_PIXELS:
                    too_large = f"{image.width}x{image.height} pixels is too large"
                    raise InputError(f"{too_large}; downscale it below {MAX_PIXELS:,} pixels")
                image.load()
                images = mnist_like(image, size)[None]
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{type(err).__name__}: {err}") from None
    if len(images) == 1:
        return [(str(path), images[0])]
    return [(f"{path}[{i}]", image) for i, image in enumerate(images)]
