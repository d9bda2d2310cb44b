"""MNIST and Fashion-MNIST: verified IDX files → resident uint8 tensors → batches by slicing."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mnistapp.data.sources import DATASETS, ensure_dataset
from mnistapp.data.transforms import MNIST_MEAN, MNIST_STD, RandomAffine, normalize
from mnistapp.errors import DataSourceError


@dataclass(eq=False, repr=False)
class TensorBatchLoader:
    """Batches by slicing resident tensors with a (shuffled) index: no per-image ``__getitem__``.

    Rank ``r`` takes every ``world_size``-th index of one permutation of ``seed`` + epoch (so a
    resumed run shuffles as it would have). Training shards are trimmed to equal length (DDP needs
    the same step count on every rank); evaluation shards keep every sample.
    """

    images: Tensor
    labels: Tensor
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    equal_shards: bool = False
    # the trainer's epoch, when training: the shuffle then follows it, also after a resume
    epoch_source: Callable[[], int] | None = None
    epoch: int = field(default=0, init=False)
    # the current pass: its epoch and how many batches it has handed out (mid-epoch resume)
    _pass: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "position": 0}, init=False)
    _resume_at: dict[str, int] | None = field(default=None, init=False)

    def state_dict(self) -> dict[str, int]:
        """Where the current pass stands; Lightning keeps it in its checkpoints."""
        return dict(self._pass)

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Go on from ``state`` in the next pass, when that pass is the same epoch."""
        self._resume_at = dict(state)

    def _indices(self) -> Tensor:
        n = len(self.labels)
        if self.shuffle:
            if self.epoch_source is not None:
                self.epoch = self.epoch_source()
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
            self._pass["epoch"] = self.epoch
            self.epoch += 1
        else:
            order = torch.arange(n)
        if self.equal_shards:
            order = order[: n - n % self.world_size]
        return order[self.rank :: self.world_size].to(self.labels.device)

    def __len__(self) -> int:
        n = len(self.labels)
        n = n // self.world_size if self.equal_shards else len(range(self.rank, n, self.world_size))
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._indices()
        resume, self._resume_at = self._resume_at, None
        first = resume["position"] if resume and resume["epoch"] == self._pass["epoch"] else 0
        self._pass["position"] = first
        for start in range(first * self.batch_size, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            self._pass["position"] += 1
            yield self.images[idx], self.labels[idx]


class MNISTDataModule(L.LightningDataModule):
    """MNIST or Fashion-MNIST as resident uint8 tensors, normalised and augmented on the device.

    ``num_classes``, ``channels``, ``image_size`` describe the data (``setup`` checks the files).
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        seed: int = 42,
        download: bool = True,
        verify: bool = True,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
        num_classes: int = 10,
        channels: int = 1,
        image_size: int = 28,
        dataset: str = "mnist",
        class_names: Sequence[str] | None = None,
        augment: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        # cli.schema checks batch sizes, mean and std; setup checks val_size against the files
        names = [str(i) for i in range(num_classes)] if class_names is None else class_names
        if isinstance(names, str) or len(names) != num_classes or len(set(names)) != len(names):
            raise ValueError(
                f"data.class_names must be a list of data.num_classes={num_classes} distinct "
                f"names, got {list(names) if not isinstance(names, str) else names!r}"
            )
        self.save_hyperparameters(logger=False)
        # plain strings: a config list (ListConfig) would not load from a weights_only checkpoint
        self.hparams.class_names = [str(name) for name in names]
        # training batches only, on their device, before normalisation (on_after_batch_transfer)
        self.augment = None if augment is None else RandomAffine.from_config(augment)
        self.hparams.augment = None if self.augment is None else self.augment.as_config()
        self.data: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def class_names(self) -> list[str]:
        """The name of each label, ``class_names[k]`` for label ``k``."""
        return list(self.hparams.class_names)

    def prepare_data(self) -> None:
        """Materialise the verified IDX files (once per node, before any rank reads them)."""
        hp = self.hparams
        ensure_dataset(DATASETS[hp.dataset], hp.data_dir, download=hp.download, verify=hp.verify)

    def setup(self, stage: str | None = None) -> None:
        """Read the IDX files with torchvision's readers and split off the validation set."""
        if self.data:
            return
        from torchvision.datasets.mnist import read_image_file, read_label_file

        hp = self.hparams
        raw = DATASETS[hp.dataset].raw(hp.data_dir)

        def read(name: str) -> Tensor:
            try:
                return (read_label_file if "labels" in name else read_image_file)(str(raw / name))
            except (AssertionError, OSError, TypeError, ValueError, RuntimeError) as err:
                # torchvision asserts on a bad IDX header (data.verify=false lets such a file in)
                raise DataSourceError(
                    f"{raw / name} is not an IDX file torchvision can read "
                    f"({type(err).__name__}: {err})"
                ) from None

        kinds = ("images-idx3-ubyte", "labels-idx1-ubyte")
        x, y, *test = [read(f"{split}-{kind}") for split in ("train", "t10k") for kind in kinds]
        size, n_val = hp.image_size, hp.val_size
        if hp.channels != 1:
            raise ValueError(f"IDX images have 1 channel, data.channels={hp.channels}")
        if tuple(x.shape[1:]) != (size, size):
            raise ValueError(f"images are {tuple(x.shape[1:])}, data.image_size={size}")
        highest = int(max(y.max(), test[1].max()))
        if highest >= hp.num_classes:
            raise ValueError(f"labels go up to {highest}, data.num_classes={hp.num_classes}")
        if not 0 <= n_val < len(y):
            raise ValueError(f"data.val_size={n_val} must be below the {len(y)} images")
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(hp.split_seed))
        val, train = perm[:n_val], perm[n_val:]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        keep = device if device is not None and device.type == "cuda" else torch.device("cpu")
        splits = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": tuple(test)}
        self.data = {
            k: (images.to(keep), labels.to(keep)) for k, (images, labels) in splits.items()
        }

    def _loader(self, split: str, train: bool = False) -> TensorBatchLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        images, labels = self.data[split]
        return TensorBatchLoader(
            images,
            labels,
            self.hparams.batch_size if train else self.hparams.eval_batch_size,
            # overfit_batches must see the same few batches every epoch
            shuffle=train and not (trainer and trainer.overfit_batches),
            seed=self.hparams.seed,
            rank=rank,
            world_size=world,
            equal_shards=train,
            epoch_source=(lambda: trainer.current_epoch) if train and trainer else None,
        )

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader("val")

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test")

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 ``[B, H, W]`` → float ``[B, 1, H, W]`` standardised with the dataset mean/std."""
        return normalize(images, self.hparams.mean, self.hparams.std)

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        """Augment training batches (``data.augment``), then normalise every batch."""
        images, labels = batch
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return self.normalize(images), labels
