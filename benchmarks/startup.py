"""How long ``python train.py`` takes from process start to its first training step.

    python benchmarks/startup.py [--repeats 5] [--data-dir data] [-- extra overrides]

Each repetition starts ``train.py`` (one training batch, no test, no figures) with a callback
from this file that writes the wall-clock time of the first ``on_train_batch_start``; the figure
is that time minus the moment just before the process was started. Beside it, interleaved, the
floor no app can beat: ``python -c "import lightning.pytorch"``. Medians are printed as a
markdown table; MNIST must already be in ``--data-dir`` (the first run materialises it otherwise,
which the warm-up repetition absorbs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]


class FirstStepClock(L.Callback):
    """Writes ``time.time()`` to ``path`` at the first training batch, then stops training."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if not Path(self.path).exists():
            Path(self.path).write_text(repr(time.time()))


def first_step_s(data_dir: str, extra: list[str], scratch: Path) -> float:
    """Seconds from starting ``train.py`` to its first training step."""
    stamp = scratch / f"first-step-{time.monotonic_ns()}"
    argv = [
        sys.executable,
        str(ROOT / "train.py"),
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={scratch / 'runs'}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "test=false",
        "plots.enabled=false",
        "+callbacks.first_step._target_=startup.FirstStepClock",
        f"+callbacks.first_step.path={stamp}",
        *extra,
    ]
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    start = time.time()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return float(stamp.read_text()) - start


def import_floor_s() -> float:
    """Seconds to start Python and import Lightning: the floor for any Lightning app."""
    start = time.time()
    subprocess.run([sys.executable, "-c", "import lightning.pytorch"], check=True)
    return time.time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"first training step": [], "import lightning.pytorch": []}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        first_step_s(args.data_dir, args.overrides, scratch)  # warm-up: caches, data, stamps
        for _ in range(args.repeats):
            step = first_step_s(args.data_dir, args.overrides, scratch)
            times["first training step"].append(step)
            times["import lightning.pytorch"].append(import_floor_s())
    print("| from process start to | median s | min s | max s |\n|---|--:|--:|--:|")
    for name, values in times.items():
        low, mid, high = min(values), statistics.median(values), max(values)
        print(f"| {name} | {mid:.2f} | {low:.2f} | {high:.2f} |")


if __name__ == "__main__":
    main()
