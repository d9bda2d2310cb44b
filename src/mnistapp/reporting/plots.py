"""The figures, as matplotlib ``Figure`` objects, and :func:`save_figure` to write them as PNG.

``matplotlib.figure.Figure`` rather than pyplot: no GUI backend is ever selected, nothing global
is kept, and callers may hand the same figures to a W&B logger before saving. Inputs are numpy
arrays or CPU tensors; ``class_names[k]`` names label ``k`` (default: the label numbers).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from mnistapp.files import atomic_write

DPI = 110
CURVE_METRICS = (("loss", "Loss"), ("f1", "Macro F1"))
CURVE_STAGES = ("train", "val")  # test is one point after training, not a curve


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically) and release it."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())
    # Figures made by pyplot stay registered until closed; ours (plain Figure) are not.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()
    return path


def read_history(csv_path: str | Path) -> dict[str, list[float]]:
    """Per-epoch values from a Lightning ``CSVLogger`` file: ``{"epoch": [...], "val/f1": [...]}``,
    and the step points of ``train/loss`` as ``step/epochs`` (epochs done) and ``step/train/loss``.

    Lightning writes train and val metrics on separate rows of an epoch: merged here (the last
    value wins); test rows are left out; missing values are NaN.
    """
    by_epoch: dict[int, dict[str, float]] = {}
    steps: list[tuple[float, float]] = []
    steps_per_epoch = None
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if v and k.split("/")[0] in CURVE_STAGES}
            if row.get("epoch") and values:
                by_epoch.setdefault(int(float(row["epoch"])), {}).update(values)
            if row.get("train/loss") and row.get("step"):
                step = float(row["step"]) + 1
                # a step point carries train/loss alone; an epoch's row also train/f1
                if not row.get("train/f1"):
                    steps.append((step, float(row["train/loss"])))
                elif steps_per_epoch is None:
                    steps_per_epoch = step / (int(float(row["epoch"])) + 1)
    epochs = sorted(by_epoch)
    keys = sorted({k for values in by_epoch.values() for k in values})
    history = {"epoch": [float(e) for e in epochs]}
    history.update({k: [by_epoch[e].get(k, math.nan) for e in epochs] for k in keys})
    if steps and steps_per_epoch:
        history["step/epochs"] = [step / steps_per_epoch for step, _ in steps]
        history["step/train/loss"] = [loss for _, loss in steps]
    return history


def curves_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    """Train and validation loss and macro F1 per epoch (epochs counted from 1), and the training
    loss's step points when the history has them."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    epochs = np.asarray(history.get("epoch", []), dtype=float) + 1
    for ax, (metric, label) in zip(fig.subplots(1, 2), CURVE_METRICS, strict=True):
        for stage, style in zip(CURVE_STAGES, ("o-", "s--"), strict=True):
            values = history.get(f"{stage}/{metric}")
            if values is not None and not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, label=stage, markersize=4)
        ax.set(title=label, xlabel="epoch", ylabel=label)
        ax.grid(alpha=0.3)
        if len(epochs):
            # whole epochs only, and some room either side when there are just one or two
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlim(epochs.min() - 0.25, epochs.max() + 0.25)
        if metric == "loss" and history.get("step/epochs"):
            x, y = history["step/epochs"], history["step/train/loss"]
            ax.plot(x, y, lw=1, alpha=0.6, label="train (per step)")
            ax.set_xlim(0, ax.get_xlim()[1])
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle("Training curves")
    return fig


def _names(class_names: Sequence[str] | None, n: int) -> list[str]:
    return [str(k) for k in range(n)] if class_names is None else [str(c) for c in class_names]


def _noun(names: Sequence[str]) -> str:
    return "digits" if all(name.isdigit() for name in names) else "images"


def confusion_figure(confusion: Any, class_names: Sequence[str] | None = None) -> Figure:
    """Confusion matrix (rows: true, columns: predicted), coloured by share of the true class."""
    counts = np.asarray(confusion, dtype=np.int64)
    n = len(counts)
    names = _names(class_names, n)
    totals = counts.sum(axis=1, keepdims=True)
    share = counts / np.maximum(totals, 1)
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.85)
    for (i, j), count in np.ndenumerate(counts):
        if count:
            colour = "white" if share[i, j] > 0.5 else ("black" if i == j else "firebrick")
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true")
    # names longer than a digit or two would overlap side by side: slant them
    slant = {"rotation": 40, "ha": "right"} if max(map(len, names), default=0) > 2 else {}
    ax.set_xticklabels(names, **slant)
    ax.set_yticklabels(names)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    noun = _noun(names)
    ax.set_title(f"Confusion matrix: {counts.sum():,} test {noun}, accuracy {accuracy:.2%}")
    return fig


def _mosaic(tiles: np.ndarray, cols: int, gap: tuple[int, int], fill: float) -> np.ndarray:
    # one image in one axes draws far faster than a grid of 64 axes

    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    top, left = gap
    out = np.full((rows * (h + top), cols * (w + left) + left), fill, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (h + top) + top, c * (w + left) + left
        out[y : y + h, x : x + w] = tile
    return out


def failures_figure(
    images: Any,
    targets: Any,
    preds: Any,
    max_images: int = 64,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Up to ``max_images`` misclassified ``[N, H, W]`` images, captioned ``true→predicted``."""
    # each image on its own grey scale, which suits normalised floats and uint8 alike
    images = np.asarray(images, dtype=np.float32)[:max_images]
    targets, preds = np.asarray(targets)[:max_images], np.asarray(preds)[:max_images]
    n = len(images)
    names = _names(class_names, int(max(targets.max(initial=9), preds.max(initial=9))) + 1)
    if n == 0:
        fig = Figure(figsize=(4, 1.5), layout="constrained")
        text = f"no misclassified {_noun(names)}"
        fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
        return fig
    low = images.min(axis=(1, 2), keepdims=True)
    span = np.maximum(images.max(axis=(1, 2), keepdims=True) - low, 1e-6)
    long = max(map(len, names)) > 2  # captioned on two lines in a smaller font
    (h, w), cols = images.shape[1:], min(8, n)
    gap = (max(h * 2 // 3 if long else h // 3, 8), 3)  # room above each image for its caption
    mosaic = _mosaic((images - low) / span, cols, gap, fill=1.0)
    rows = math.ceil(n / cols)
    height = 1.45 * rows * (h + gap[0]) / (h + max(h // 3, 8))
    fig = Figure(figsize=(1.15 * cols + 0.3, height + 0.5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for i, (true, pred) in enumerate(zip(targets, preds, strict=True)):
        r, c = divmod(i, cols)
        x, y = c * (w + gap[1]) + gap[1] + w / 2, r * (h + gap[0]) + gap[0] - 1
        a, b = names[int(true)], names[int(pred)]
        label = f"{a}\n→{b}" if long else f"{a}→{b}"
        ax.text(x, y, label, color="red", ha="center", va="bottom", fontsize=7 if long else 10)
    ax.set_axis_off()
    ax.set_title(f"Misclassified test {_noun(names)} (true→predicted), first {n}")
    return fig


def kernels_figure(weight: Any, max_kernels: int = 64) -> Figure:
    """The first conv layer's kernels ``[out, in, kh, kw]`` (first input channel), on one scale."""
    kernels = np.asarray(weight, dtype=np.float32)[:max_kernels, 0]
    n, h, w = kernels.shape
    cols = min(8, n)
    limit = float(np.abs(kernels).max()) or 1.0
    # NaN gaps are drawn in the colour map's "bad" colour: light grey, unlike a zero weight
    mosaic = _mosaic(kernels, cols, (1, 1), fill=np.nan)
    mosaic = np.vstack([mosaic, np.full((1, mosaic.shape[1]), np.nan, dtype=np.float32)])
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.0 * cols + 1.4, 1.0 * rows * h / w + 0.8), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    image = ax.imshow(mosaic, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_axis_off()
    fig.colorbar(image, ax=ax, shrink=0.9, label="weight")
    ax.set_title(f"First conv layer: {n} kernels of {h}x{w}")
    return fig


def tsne_embedding(features: Any, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``[N, D]`` features (scikit-learn; seconds for a couple of thousand points)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, dtype=np.float32)
    perplexity = min(30.0, (len(features) - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    # One OpenMP thread: its many tiny parallel steps slow down several-fold as soon as the
    # cores are shared (other ranks, data loaders, other jobs), and gain little when they are not.
    with threadpool_limits(1, user_api="openmp"):
        return tsne.fit_transform(features)


def tsne_figure(
    panels: Mapping[str, tuple[Any, Any]], class_names: Sequence[str] | None = None
) -> Figure:
    """One scatter per panel ``title -> (embedding [N, 2], labels [N])``, coloured by class."""
    fig = Figure(figsize=(5.2 * len(panels) + 1.0, 5.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    legend: dict[int, Any] = {}
    for ax, (title, (embedding, labels)) in zip(axes, panels.items(), strict=True):
        embedding, labels = np.asarray(embedding), np.asarray(labels)
        for k in np.unique(labels).tolist():
            points = embedding[labels == k]
            colour = colormaps["tab10"](k % 10)
            legend[k] = ax.scatter(points[:, 0], points[:, 1], s=6, color=colour)
        ax.set(title=title, xticks=[], yticks=[])
    # the classes are the same in every panel: one legend, outside the last one
    names = _names(class_names, max(legend) + 1)
    noun = _noun(names)
    axes[-1].legend(
        [legend[k] for k in sorted(legend)],
        [names[k] for k in sorted(legend)],
        title="digit" if noun == "digits" else "class",
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        markerscale=2.5,
        frameon=False,
    )
    n = len(np.asarray(next(iter(panels.values()))[1]))
    fig.suptitle(f"t-SNE of penultimate-layer features, {n:,} test {noun}")
    return fig
