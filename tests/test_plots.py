"""The figure functions: each makes a valid, non-trivial PNG; no GUI, no pyplot, no eager import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistapp.reporting import plots
from tests.helpers import PNG_SIGNATURE, ROOT, assert_png

# A Lightning CSVLogger file: lr rows without an epoch, train/loss step points (alone on their
# row), train and val on separate rows, and the test row logged after the last epoch.
METRICS_CSV = """epoch,lr-SGD,step,test/acc,test/f1,test/loss,train/f1,train/loss,val/f1,val/loss
,0.05,0,,,,,,,
0,,7,,,,,2.50,,
0,,15,,,,,,0.80,1.30
0,,15,,,,0.40,2.10,,
,0.05,16,,,,,,,
1,,23,,,,,1.20,,
1,,31,,,,,,0.95,0.20
1,,31,,,,0.90,0.50,,
2,,32,0.96,0.96,0.15,,,,
"""


def test_read_history_merges_rows_per_epoch_and_drops_test(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    history = plots.read_history(path)
    assert history["epoch"] == [0.0, 1.0]
    assert history["val/f1"] == [0.80, 0.95] and history["train/loss"] == [2.10, 0.50]
    assert not any(k.startswith("test/") or k.startswith("lr") for k in history)
    # the step points, at epochs done (16 steps an epoch)
    assert history["step/epochs"] == [0.5, 1.5] and history["step/train/loss"] == [2.50, 1.20]


def test_every_figure_is_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    confusion = np.diag(rng.integers(900, 1100, 10)) + rng.integers(0, 4, (10, 10))
    labels = np.arange(300) % 10
    figures = {
        "curves": plots.curves_figure(plots.read_history(csv_path)),
        "confusion": plots.confusion_figure(confusion.tolist()),
        "failures": plots.failures_figure(
            rng.normal(size=(70, 28, 28)).astype(np.float32), labels[:70], (labels[:70] + 1) % 10
        ),
        "failures_uint8": plots.failures_figure(
            rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), [1, 2, 3, 4, 5], [7, 7, 7, 7, 7]
        ),
        "kernels": plots.kernels_figure(rng.normal(size=(6, 1, 5, 5))),
        "tsne": plots.tsne_figure(
            {
                "freshly initialised": (rng.normal(size=(300, 2)), labels),
                "trained": (rng.normal(size=(300, 2)) + labels[:, None] * 3, labels),
            }
        ),
    }
    for name, fig in figures.items():
        path = plots.save_figure(fig, tmp_path / "figs" / f"{name}.png")
        assert_png(path, min_kb=5 if name == "failures_uint8" else 10)


def test_failures_figure_without_failures_says_so(tmp_path: Path) -> None:
    fig = plots.failures_figure([], [], [])
    assert "no misclassified digits" in [t.get_text() for t in fig.texts]
    assert plots.save_figure(fig, tmp_path / "none.png").read_bytes().startswith(PNG_SIGNATURE)


def test_tsne_embedding_is_2d() -> None:
    pytest.importorskip("sklearn")
    features = np.random.default_rng(0).normal(size=(40, 16))
    assert plots.tsne_embedding(features).shape == (40, 2)


def test_no_matplotlib_at_import_and_no_pyplot_ever(tmp_path: Path) -> None:
    # The entry points stay light (Lightning itself pulls matplotlib in, later, via torchmetrics);
    # the figures never go through pyplot, so no GUI backend is ever chosen.
    code = (
        "import sys\n"
        "from mnistapp.cli import evaluate, export, predict, train\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
        "from mnistapp.reporting import plots\n"
        "plots.save_figure(plots.confusion_figure([[1, 0], [0, 1]]), sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "figure.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


CLOTHES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
CLOTHES += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_figures_name_the_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confusion = plots.confusion_figure(np.eye(10, dtype=int) * 5, class_names=CLOTHES)
    ax = confusion.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLOTHES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLOTHES
    assert "test images" in ax.get_title()

    failures = plots.failures_figure(
        rng.random((3, 28, 28)), [9, 0, 6], [7, 6, 0], class_names=CLOTHES
    )
    assert _texts(failures) == [
        "Ankle boot\n→Sneaker",
        "T-shirt/top\n→Shirt",
        "Shirt\n→T-shirt/top",
    ]
    labels = np.arange(60) % 10
    tsne = plots.tsne_figure({"trained": (rng.normal(size=(60, 2)), labels)}, class_names=CLOTHES)
    legend = tsne.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == CLOTHES
    assert legend.get_title().get_text() == "class"
    for name, fig in (("confusion", confusion), ("failures", failures), ("tsne", tsne)):
        assert_png(plots.save_figure(fig, tmp_path / f"{name}.png"), min_kb=5)


def test_figures_number_the_digits_by_default() -> None:
    ax = plots.confusion_figure(np.eye(10, dtype=int)).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(10)]
    assert "test digits" in ax.get_title()
    failures = plots.failures_figure(np.zeros((2, 28, 28)), [7, 4], [1, 9])
    assert _texts(failures) == ["7→1", "4→9"]
    tsne = plots.tsne_figure({"trained": (np.zeros((20, 2)), np.arange(20) % 10)})
    assert tsne.axes[0].get_legend().get_title().get_text() == "digit"
