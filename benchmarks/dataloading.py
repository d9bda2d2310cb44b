"""Side-by-side: one epoch of batches from the tensor-resident loader vs the usual DataLoader.

    python benchmarks/dataloading.py [--data-dir data] [--batch-size 64] [--device cpu|cuda]

The usual path is torchvision's ``MNIST`` dataset with ``ToTensor`` + ``Normalize`` (one PIL image
and one transform per sample) in a ``DataLoader``; ours slices uint8 tensors with a shuffled index
and normalises whole batches on the device. Both deliver normalised float batches on ``--device``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST

from mnistapp.data.datamodule import MNISTDataModule, TensorBatchLoader
from mnistapp.data.sources import ensure_mnist


def _epoch(batches, device: torch.device, prepare) -> tuple[float, int]:
    start = time.perf_counter()
    seen = 0
    for images, labels in batches:
        prepare(images.to(device, non_blocking=True))
        seen += len(labels.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (usual path)")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per path; the best counts")
    args = parser.parse_args()
    device = torch.device(args.device)
    ensure_mnist(args.data_dir, download=False)

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    dataset = MNIST(args.data_dir, train=True, transform=transform)
    usual = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    dm = MNISTDataModule(args.data_dir, batch_size=args.batch_size, val_size=0, download=False)
    dm.setup("fit")
    images, labels = (t.to(device) for t in dm.data["train"])
    ours = TensorBatchLoader(images, labels, args.batch_size, shuffle=True)

    # Alternate the two paths so that machine noise hits both alike; keep each one's best epoch.
    runs = {"usual": [], "ours": []}
    for _ in range(args.repeats):
        runs["usual"].append(_epoch(usual, device, lambda x: x))
        runs["ours"].append(_epoch(ours, device, dm.normalize))
    (t_usual, n_usual), (t_ours, n_ours) = min(runs["usual"]), min(runs["ours"])
    print(f"device={device} batch_size={args.batch_size} workers={args.workers}")
    print(f"DataLoader + PIL transforms: {t_usual:7.3f} s for {n_usual} images")
    print(f"tensor-resident loader:      {t_ours:7.3f} s for {n_ours} images")
    print(f"speed-up: {t_usual / t_ours:.1f}x")


if __name__ == "__main__":
    main()
