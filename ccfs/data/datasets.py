"""The dataset table and `load_dataset`, which decodes once and then reads the cache.

A `Dataset` holds both splits as uint8 tensors `[N, C, H, W]` with int64 labels, plus
class names and the normalisation mean/std. Rows of `train.images` are the identity of
a sample everywhere in ccfs (scores are `[N]` arrays, selections are index lists). Read
from a store (`data/store.py`), the image tensors are memory maps of its files
(`Split.mapped`): a batch reads its rows from the page cache or the disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from ccfs.data import readers
from ccfs.errors import DataError


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    mapped: bool = False  # images memory-map a store (data/store.py): read per batch, never copied whole

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "Split":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.images[idx], self.labels[idx])  # a copy of those rows, in memory

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
        return (f"{self.name}: {len(self.train)} train / {len(self.test)} test, "
                f"{self.num_classes} classes, images {c}x{h}x{w}")


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
