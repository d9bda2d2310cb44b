"""``mnistapp-predict``: MNIST-style conversion of any image, .npy and IDX inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnistapp.data.inputs import (
    InputError,
    as_mnist_array,
    find_inputs,
    mnist_like,
    read_digits,
)
from mnistapp.data.sources import idx_bytes
from tests.helpers import compose, run_module, synthetic_digits


@pytest.fixture(scope="module")
def checkpoint(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "last.ckpt"


def drawn_seven(size: tuple[int, int], ink: str, paper: str, width: int) -> Image.Image:
    """A '7' drawn with a thick pen, the way a user's photo or drawing might look."""
    image = Image.new("RGB", size, paper)
    w, h = size
    points = [(0.3 * w, 0.2 * h), (0.7 * w, 0.2 * h), (0.45 * w, 0.85 * h)]
    ImageDraw.Draw(image).line(points, fill=ink, width=width, joint="curve")
    return image


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(image.shape)
    mass = image.astype(np.float64)
    return (ys * mass).sum() / mass.sum(), (xs * mass).sum() / mass.sum()


def test_mnist_like_matches_the_mnist_preprocessing() -> None:
    light = drawn_seven((300, 180), ink="#202040", paper="#f0ebe6", width=18)  # RGB, wide
    dark = drawn_seven((300, 180), ink="white", paper="black", width=18).convert("L")
    for image in (light, dark):
        digit = mnist_like(image)
        assert digit.dtype == np.uint8 and digit.shape == (28, 28)
        assert digit.max() == 255 and np.median(digit) == 0  # white digit on black
        rows, cols = np.nonzero(digit > 25)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 21  # the 20x20 box (+ resampling blur)
        cy, cx = centre_of_mass(digit)
        assert abs(cy - 14) < 0.6 and abs(cx - 14) < 0.6  # centred by mass, as MNIST is
    # light and dark versions of one drawing become (nearly) the same MNIST digit
    diff = np.abs(mnist_like(light).astype(int) - mnist_like(dark).astype(int))
    assert diff.mean() < 8


def test_images_are_read_by_their_real_range(tmp_path: Path) -> None:
    grey = drawn_seven((120, 100), ink="white", paper="black", width=12).convert("L")
    expected = mnist_like(grey)
    values = np.asarray(grey)
    ink_only = Image.new("RGBA", grey.size, "black")
    ink_only.putalpha(grey)  # a black digit on a transparent canvas
    variants = {
        "grey16.png": Image.fromarray(values.astype(np.uint16) * 257),  # 16-bit, full range
        "rgba.png": ink_only,
        "palette.png": grey.convert("P"),
        "bilevel.png": grey.point(lambda v: 255 if v > 127 else 0).convert("1"),
    }
    for name, image in variants.items():
        image.save(tmp_path / name)
        ((_, digit),) = read_digits(tmp_path / name)
        assert digit.max() == 255, name
        assert np.abs(digit.astype(int) - expected.astype(int)).mean() < 10, name


def test_huge_images_are_downscaled_or_refused(tmp_path: Path) -> None:
    big = Image.new("L", (8000, 8000))
    ImageDraw.Draw(big).rectangle((3000, 1000, 5000, 7000), fill=255)
    big.save(tmp_path / "big.jpg", quality=90)  # 64 M pixels: decoded at 1/8 scale
    ((_, digit),) = read_digits(tmp_path / "big.jpg")
    assert digit.shape == (28, 28) and digit.max() == 255
    Image.new("1", (12000, 12000)).save(tmp_path / "huge.png")
    with pytest.raises(InputError, match="12000x12000 pixels is too large"):
        read_digits(tmp_path / "huge.png")


def test_mnist_like_refuses_a_blank_image() -> None:
    with pytest.raises(InputError, match="no digit"):
        mnist_like(Image.new("RGB", (50, 40), "white"))


def test_arrays_are_taken_as_mnist_images() -> None:
    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert as_mnist_array(digits[0]).shape == (1, 28, 28)
    np.testing.assert_array_equal(as_mnist_array(digits[:, None]), digits)
    np.testing.assert_array_equal(as_mnist_array(digits / 255.0), digits)
    np.testing.assert_array_equal(as_mnist_array(digits.astype(np.float32)), digits)
    for bad, message in ((np.zeros((2, 32, 32)), "28x28"), (-np.ones((28, 28)), "0..1 or 0..255")):
        with pytest.raises(InputError, match=message):
            as_mnist_array(bad)


def test_find_inputs(tmp_path: Path) -> None:
    for name in ("a.png", "b.jpg", "c.npy", "d-images-idx3-ubyte", "notes.txt"):
        (tmp_path / name).touch()
    found = [p.name for p in find_inputs(str(tmp_path))]
    assert found == ["a.png", "b.jpg", "c.npy", "d-images-idx3-ubyte"]  # not notes.txt
    assert [p.name for p in find_inputs(f"{tmp_path}/*.p*")] == ["a.png"]
    assert [p.name for p in find_inputs([f"{tmp_path}/b.jpg", f"{tmp_path}/a.png"])] == [
        "b.jpg",
        "a.png",
    ]
    with pytest.raises(InputError, match="no file matches"):
        find_inputs(f"{tmp_path}/*.bmp")


def test_predict_images_npy_and_idx(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    drawn_seven((120, 200), ink="black", paper="white", width=12).save(inputs / "light_tall.png")
    drawn_seven((200, 120), ink="#eeeeee", paper="#101010", width=10).save(inputs / "dark.jpg")
    drawn_seven((64, 64), ink="navy", paper="#ffe0e0", width=6).save(inputs / "rgb.bmp")
    Image.new("LA", (40, 40), (0, 0)).save(inputs / "blank.png")  # transparent, no digit
    (inputs / "broken.png").write_bytes(b"not an image")
    images, labels = synthetic_digits(12, seed=1)  # like the tiny test set
    np.save(inputs / "digits.npy", images[:6])
    (inputs / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images[6:]))
    (inputs / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[6:]))

    from mnistapp.cli.predict import RESULT_KEYS, predict, read_inputs
    from mnistapp.cli.task import run_on_checkpoint

    cfg = compose(
        f"ckpt_path={checkpoint}",
        f"inputs={inputs}",
        f"paths.log_dir={tmp_path}",
        config_name="predict",
        output_dir=tmp_path / "run",
    )
    caplog.set_level("WARNING")
    run_on_checkpoint("predict", predict, cfg, RESULT_KEYS, read_inputs, errors=(InputError,))
    stdout = capsys.readouterr().out
    csv_path = tmp_path / "run" / "predictions.csv"
    rows = list(csv.DictReader(csv_path.open()))
    names = [Path(row["file"]).name for row in rows]
    assert names == [
        "dark.jpg",
        *[f"digits.npy[{i}]" for i in range(6)],
        "light_tall.png",
        "rgb.bmp",
        *[f"t10k-images-idx3-ubyte[{i}]" for i in range(6)],
    ]
    for row in rows:
        top3 = [pair.split(":") for pair in row["top3"].split()]
        assert len(top3) == 3 and top3[0][0] == row["prediction"]
        assert 0 <= int(row["prediction"]) <= 9 and 0 < float(row["probability"]) <= 1
        assert row["class"] == row["prediction"]  # MNIST's class names are its digits
        assert [float(p) for _, p in top3] == sorted((float(p) for _, p in top3), reverse=True)
    predicted = [int(row["prediction"]) for row in rows if "[" in row["file"]]
    assert np.mean(np.array(predicted) == labels) >= 0.5  # the tiny model knows these
    # unreadable files are reported and skipped, not fatal
    for name in ("broken.png", "blank.png", "t10k-labels-idx1-ubyte"):
        assert f"Skipping {inputs / name}" in caplog.text
    assert "light_tall.png" in stdout and "top3" in stdout


def test_predict_without_readable_inputs_is_one_clear_line(
    checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image")
    proc = run_module(
        "mnistapp.cli.predict",
        f"ckpt_path={checkpoint}",
        f"inputs={tmp_path}/broken.png",
        f"paths.log_dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 2
    assert "predict: error: no digits could be read" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refused_eval_predict_export_leave_no_folder(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnistapp.cli import evaluate, export, predict
    from mnistapp.cli.task import run_on_checkpoint

    (tmp_path / "broken.png").write_bytes(b"not an image")
    missing = tmp_path / "missing.ckpt"
    cases = {
        "predict": (predict.predict, [f"ckpt_path={checkpoint}", f"inputs={tmp_path}/broken.png"]),
        "eval": (evaluate.evaluate, [f"ckpt_path={missing}"]),
        "export": (export.export, [f"ckpt_path={missing}"]),
    }
    modules = {"predict": predict, "eval": evaluate, "export": export}
    for prog, (task, overrides) in cases.items():
        logs = tmp_path / f"logs_{prog}"
        run_dir = logs / prog / "2026-01-01" / "00-00-00"
        (run_dir / ".hydra").mkdir(parents=True)  # as Hydra leaves it before the task starts
        (run_dir / ".hydra" / "config.yaml").write_text("{}\n")
        (run_dir / f"{prog}.log").write_text("")
        cfg = compose(*overrides, f"paths.log_dir={logs}", config_name=prog, output_dir=run_dir)
        keys = modules[prog].RESULT_KEYS
        extra = (predict.read_inputs,) if prog == "predict" else ()
        errors = (InputError,) if prog == "predict" else ()
        with pytest.raises(SystemExit) as exit_:
            run_on_checkpoint(prog, task, cfg, keys, *extra, errors=errors)
        assert exit_.value.code == 2, prog
        assert not logs.exists() or not any(logs.iterdir()), prog  # nothing left behind
        stderr = capsys.readouterr().err
        assert stderr.count("\n") == 1 and stderr.startswith(f"{prog}: error: "), stderr
        expected = "no digits could be read" if prog == "predict" else "no checkpoint file at"
        assert expected in stderr, stderr
