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

    Rank ``r`` takes every ``world_size``-th index of one permutation of ``seed`` + epoch. Training
    shards are trimmed to equal length (DDP needs the same step count on every rank).
    """

    images: Tensor
    labels: Tensor
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    equal_shards: bool = False
    epoch_source: Callable[[], int] | None = None  # the trainer's epoch: a resume shuffles alike
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

    def __len__(self) -> int:
        n = len(self.labels)
        n = n // self.world_size if self.equal_shards else len(range(self.rank, n, self.world_size))
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        order = torch.arange(n)
        if self.shuffle:
            if self.epoch_source is not None:
                self.epoch = self.epoch_source()
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
            self._pass["epoch"] = self.epoch
            self.epoch += 1
        if self.equal_shards:
            order = order[: n - n % self.world_size]
        order = order[self.rank :: self.world_size].to(self.labels.device)
        resume, self._resume_at = self._resume_at, None
        first = resume["position"] if resume and resume["epoch"] == self._pass["epoch"] else 0
        self._pass["position"] = first
        for start in range(first * self.batch_size, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            self._pass["position"] += 1
            yield self.images[idx], self.labels[idx]


class MNISTDataModule(L.LightningDataModule):
    """MNIST or Fashion-MNIST as resident uint8 tensors, normalised and augmented on the device."""

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
        names = [str(i) for i in range(num_classes)] if class_names is None else class_names
        if isinstance(names, str) or len(names) != num_classes or len(set(names)) != len(names):
            raise ValueError(
                f"data.class_names must be a list of data.num_classes={num_classes} distinct "
                f"names, got {names!r}"
            )
        self.save_hyperparameters(logger=False)
        # plain values: a config list (ListConfig) would not load from a weights_only checkpoint
        self.hparams.class_names = [str(name) for name in names]
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

        hp, dataset = self.hparams, DATASETS[self.hparams.dataset]
        # resident on the GPU when training there: batches are then slices, never copies
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        keep = device if device.type == "cuda" else "cpu"

        def read(name: str) -> Tensor:
            path = dataset.raw(hp.data_dir) / name
            try:
                return (read_label_file if "labels" in name else read_image_file)(str(path))
            except (AssertionError, OSError, TypeError, ValueError, RuntimeError) as err:
                # torchvision asserts on a bad IDX header (data.verify=false lets such a file in)
                message = f"is not an IDX file torchvision can read ({type(err).__name__}: {err})"
                raise DataSourceError(f"{path} {message}") from None

        # train images and labels, then the test set's
        x, y, *test = [read(name).to(keep) for name in dataset.md5]
        if hp.channels != 1:
            raise ValueError(f"IDX images have 1 channel, data.channels={hp.channels}")
        if tuple(x.shape[1:]) != (hp.image_size, hp.image_size):
            raise ValueError(f"images are {tuple(x.shape[1:])}, data.image_size={hp.image_size}")
        highest = int(max(y.max(), test[1].max()))
        if highest >= hp.num_classes:
            raise ValueError(f"labels go up to {highest}, data.num_classes={hp.num_classes}")
        if not 0 <= hp.val_size < len(y):
            raise ValueError(f"data.val_size={hp.val_size} must be below the {len(y)} images")
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(hp.split_seed))
        val, train = perm[: hp.val_size].to(keep), perm[hp.val_size :].to(keep)
        self.data = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": tuple(test)}

    def _loader(self, split: str, train: bool = False) -> TensorBatchLoader:
        trainer = self.trainer
        return TensorBatchLoader(
            *self.data[split],
            self.hparams.batch_size if train else self.hparams.eval_batch_size,
            # overfit_batches must see the same few batches every epoch
            shuffle=train and not (trainer and trainer.overfit_batches),
            seed=self.hparams.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
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
