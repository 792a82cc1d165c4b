"""The dataset table and `load_dataset`, which decodes once and then reads the cache.

A `Dataset` holds both splits as uint8 tensors `[N, C, H, W]` with int64 labels, plus
class names and the normalisation mean/std. Rows of `train.images` are the identity of
a sample everywhere in ccfs (scores are `[N]` arrays, selections are index lists). Read
from a store (`data/store.py`), the images are a `StoreRows` (`Split.mapped`), indexed like
a tensor: a batch reads its rows from the page cache or the disk; a validation split of a
store (`carve_validation`) is two row-map views over it (`StoreRows.take`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import numpy as np
import torch

from ccfs.data import readers
from ccfs.errors import DataError


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W]; for a mapped split a store.StoreRows, indexed like one
    labels: torch.Tensor  # int64 [N]
    mapped: bool = False  # images read from a store (data/store.py) per batch, never copied whole

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "Split":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.images[idx], self.labels[idx])  # a copy of those rows, in memory

    def take(self, indices) -> "Split":
        """Rows `indices` as a Split: of a mapped split a mapped view over the store (its rows
        read in place when indexed, nothing read here), else `subset`'s in-memory copy."""
        if not self.mapped:
            return self.subset(indices)
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.images.take(idx), self.labels[idx], mapped=True)

    def to(self, device) -> "Split":
        images = self.images.to(device)
        return Split(images, self.labels.to(device), self.mapped and images is self.images)

    def batches_on(self, device) -> "Split":
        """This split for a training loop on `device` with the images left where they are
        (a store too big to move): indexing them gathers the rows there and moves only
        those; the labels move to `device`."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return Split(RowsTo(self.images, device), self.labels.to(device), self.mapped)


class RowsTo:
    """Images [N, C, H, W] left on their device; `rows[idx]` gathers there, returns on `device`."""

    def __init__(self, images: torch.Tensor, device: torch.device):
        self.images, self.device, self.shape = images, device, images.shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.to(self.images.device)
        return self.images[idx].to(self.device, non_blocking=True)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val: Split | None = None  # carved from the file's train split (`carve_validation`), else None
    train_rows: torch.Tensor | None = None  # [N] each train row's index in the file's train split
    val_rows: torch.Tensor | None = None  # [V] the same for the validation rows

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def summary(self) -> str:
        c, h, w = self.train.images.shape[1:]
        val = f" + {len(self.val)} validation" if self.val is not None else ""
        return (f"{self.name}: {len(self.train)} train{val} / {len(self.test)} test, "
                f"{self.num_classes} classes, images {c}x{h}x{w}")

    def file_rows(self, rows) -> list[int]:
        """Train rows -> their indices in the file's train split (what exports report)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return (rows if self.train_rows is None else self.train_rows[rows]).tolist()

    @property
    def file_train_size(self) -> int:
        """Images in the dataset file's train split (train and validation rows together)."""
        return len(self.train) + (len(self.val) if self.val is not None else 0)

    def pool_rows(self, file_rows) -> torch.Tensor:
        """Rows of the dataset file's train split -> train rows (the inverse of `file_rows`);
        a held-out (validation) or out-of-range row is a DataError."""
        file_rows = torch.as_tensor(file_rows, dtype=torch.long)
        if self.train_rows is None:
            bad = (file_rows < 0) | (file_rows >= len(self.train))
            if bad.any():
                raise DataError(f"row {int(file_rows[bad][0])} is not a row of the {len(self.train)}-image train split")
            return file_rows
        inverse = torch.full((self.file_train_size,), -1, dtype=torch.long)
        inverse[self.train_rows] = torch.arange(len(self.train_rows))
        bad = (file_rows < 0) | (file_rows >= len(inverse))
        rows = inverse[file_rows.clamp(0, len(inverse) - 1)]
        bad |= rows < 0
        if bad.any():
            raise DataError(f"row {int(file_rows[bad][0])} of the dataset file is held out as validation "
                            f"(data.val_size) or outside its {len(inverse)}-image train split")
        return rows

    def file_values(self, values: np.ndarray, fill: float) -> np.ndarray:
        """A per-train-row array [N] spread over the dataset file's train split, held-out
        (validation) rows set to `fill`."""
        if self.train_rows is None:
            return values
        out = np.full(self.file_train_size, fill, dtype=values.dtype)
        out[self.train_rows.numpy()] = values
        return out

    @property
    def file_train_labels(self) -> torch.Tensor:
        """Labels of the file's whole train split (train and validation rows together)."""
        if self.val is None:
            return self.train.labels
        labels = torch.empty(len(self.train) + len(self.val), dtype=torch.long)
        labels[self.train_rows], labels[self.val_rows] = self.train.labels, self.val.labels
        return labels


def validation_rows(labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """`size` train rows, the same number from every class, drawn with a fixed seed (sorted).
    The choice depends only on the labels, `size` and `seed`, never on the run's seed."""
    k = int(labels.max()) + 1
    per_class, counts = size // k, torch.bincount(labels, minlength=k)
    if size % k or per_class < 1:
        raise DataError(f"data.val_size={size} must be a positive multiple of the {k} classes "
                        f"(class-balanced), e.g. {k * max(1, round(size / k))}")
    if per_class >= int(counts.min()):
        raise DataError(f"data.val_size={size} takes {per_class} images per class, but class "
                        f"{int(counts.argmin())} has only {int(counts.min())}; use a smaller data.val_size")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(k):
        rows = (labels == c).nonzero().flatten()
        picks.append(rows[torch.randperm(len(rows), generator=gen)[:per_class]])
    return torch.cat(picks).sort().values


def carve_validation(data: Dataset, size: int, seed: int = 0) -> Dataset:
    """`data` with a class-balanced validation split of `size` images taken out of its
    train split: teacher, scores, selection pools and students never see those rows. The
    rows are chosen from the labels alone, so a store (a mapped split) is split the same
    way, into two views over it: the store is not copied, and nothing is read here."""
    val_rows = validation_rows(data.train.labels, size, seed)
    keep = torch.ones(len(data.train), dtype=torch.bool)
    keep[val_rows] = False
    train_rows = keep.nonzero().flatten()
    return replace(data, train=data.train.take(train_rows), val=data.train.take(val_rows),
                   train_rows=train_rows, val_rows=val_rows)


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the dataset table."""
    reader: Callable[..., readers.RawDataset]
    default_root: str | None
    mean: tuple[float, ...] | None  # None: computed from the train split
    std: tuple[float, ...] | None
    options: dict = field(default_factory=dict)  # reader keyword arguments (part of the cache key)


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(partial(readers.read_idx, classes=readers.FASHION_CLASSES),
                                 "/usr/share/datasets/fashion-mnist", (0.2861,), (0.3530,)),
    "mnist": DatasetSpec(partial(readers.read_idx, classes=readers.MNIST_CLASSES),
                         "/usr/share/datasets/mnist", (0.1307,), (0.3081,)),
    # CIFAR-10 and CIFAR-100 both use the constants the field's published CIFAR teachers
    # (SRe2L, CDA, CCFS; torchvision recipes) were trained with, so imported teachers see
    # the inputs they expect; `data.mean` / `data.std` override them.
    "cifar10": DatasetSpec(readers.read_cifar10, "data/cifar-10-batches-py", CIFAR_MEAN, CIFAR_STD),
    "cifar100": DatasetSpec(readers.read_cifar100, "data/cifar-100-python", CIFAR_MEAN, CIFAR_STD),
    "tiny-imagenet": DatasetSpec(readers.read_tiny_imagenet, "data/tiny-imagenet-200",
                                 (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "imagefolder": DatasetSpec(readers.read_imagefolder, None, None, None,
                               {"image_size": 32, "channels": 3}),
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_root(name: str, root: str | None) -> str:
    root = root or dataset_spec(name).default_root
    if root is None:
        raise DataError(f"dataset {name!r} has no default folder; pass --root / data.root")
    return root
