"""Decode a dataset once, then reload it from a tensor cache in well under a second.

The cache key covers the dataset name, the absolute root, the reader options and the
size and mtime of the root's top-level entries, so pointing at other files re-decodes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ccfs.artifacts import torch_save
from ccfs.data.datasets import Dataset, Split, dataset_spec, resolve_root
from ccfs.errors import DataError

CACHE_VERSION = 1


def cache_dir() -> Path:
    return Path(os.environ.get("CCFS_CACHE", Path.home() / ".cache" / "ccfs"))


INSTALL_HINTS = {"fashion-mnist": " (or install it: `apt-get install -y dataset-fashion-mnist`)"}


def _fingerprint(root: Path, name: str = "") -> list:
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; pass the folder holding the {name} files "
                        f"with --root / data.root{INSTALL_HINTS.get(name, '')}")
    return [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(root.iterdir())]


def cache_key(name: str, root: Path, options: dict) -> str:
    blob = json.dumps([CACHE_VERSION, name, str(root), sorted(options.items()), _fingerprint(root, name)])
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class ChannelStats:
    """Per-channel mean and std (of pixels / 255) of uint8 images [N, C, H, W] added a batch
    at a time: exact per-channel counts of the 256 values, summed in float64 at the end, so
    no float copy of the images is ever made."""

    BLOCK = 1 << 20  # pixels counted at a time (np.bincount converts them to int64)

    def __init__(self, channels: int):
        self.counts = np.zeros((channels, 256), np.int64)

    def add(self, x: np.ndarray) -> None:
        rows = max(1, self.BLOCK // max(1, x.shape[2] * x.shape[3]))  # images per block
        for s in range(0, len(x), rows):
            for c in range(self.counts.shape[0]):
                self.counts[c] += np.bincount(x[s:s + rows, c].ravel(), minlength=256)

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        v = np.arange(256, dtype=np.float64) / 255
        n = self.counts.sum(1).astype(np.float64)
        mean = self.counts @ v / n
        var = (self.counts @ (v * v) - n * mean * mean) / np.maximum(n - 1, 1)  # unbiased, as torch.std
        return tuple(mean.tolist()), tuple(np.sqrt(np.maximum(var, 0)).tolist())


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stats = ChannelStats(x.shape[1])
    stats.add(x)
    return stats.result()


def _decode(name: str, root: Path, options: dict) -> dict:
    spec = dataset_spec(name)
    raw = spec.reader(root, **options)
    mean, std = (spec.mean, spec.std) if spec.mean is not None else _channel_stats(raw.train_x)
    return {"train_x": torch.from_numpy(np.ascontiguousarray(raw.train_x)),
            "train_y": torch.from_numpy(raw.train_y.astype(np.int64)),
            "test_x": torch.from_numpy(np.ascontiguousarray(raw.test_x)),
            "test_y": torch.from_numpy(raw.test_y.astype(np.int64)),
            "classes": list(raw.classes), "mean": list(mean), "std": list(std)}


def load_dataset(name: str, root: str | None = None, use_cache: bool = True, **options) -> Dataset:
    """Load a dataset from the table, decoding it on first use and caching the tensors."""
    spec = dataset_spec(name)
    options = {**spec.options, **options}
    root_path = Path(resolve_root(name, root)).expanduser().resolve()
    path = cache_dir() / f"{name}-{cache_key(name, root_path, options)}.pt"
    blob = None
    if use_cache and path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
        except Exception:  # a damaged cache is re-decoded, never trusted
            blob = None
    if blob is None:
        blob = _decode(name, root_path, options)
        if use_cache:
            torch_save(blob, path)
    # the table's constants win over the cached ones, so changing them needs no re-decode
    mean = spec.mean if spec.mean is not None else tuple(blob["mean"])
    std = spec.std if spec.std is not None else tuple(blob["std"])
    return Dataset(name=name, train=Split(blob["train_x"], blob["train_y"]),
                   test=Split(blob["test_x"], blob["test_y"]), classes=blob["classes"],
                   mean=tuple(mean), std=tuple(std))
