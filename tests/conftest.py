"""Shared fixtures: a tiny fake Fashion-MNIST in the real IDX gzip format, and a tensor
cache that lives in the test's tmp folder (never the user's ~/.cache)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# One thread: the suite's tensors are tiny, and on a busy 2-core machine torch's default
# of 2 threads can collapse (a 0.6 ms step measured at 85 ms).
torch.set_num_threads(1)

FAKE_CLASSES = 10
FAKE_TRAIN_PER_CLASS = 12
FAKE_TEST_PER_CLASS = 4
FAKE_SIZE = 28  # px


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x00 0x00 0x08 <ndim>, big-endian uint32 dims, raw uint8 data; gzipped."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def fake_images(labels: np.ndarray, rng: np.random.Generator, size: int = FAKE_SIZE) -> np.ndarray:
    """uint8 [N, size, size]: class c is a bright 7x7 block at cell c of a 4x4 grid of
    7 px cells, on a dim noisy background, jittered by up to 1 px (learnable, not trivial)."""
    x = rng.integers(0, 40, size=(len(labels), size, size))
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 4)
        dy, dx = rng.integers(-1, 2, size=2)
        y0, x0 = max(0, 7 * r + dy), max(0, 7 * q + dx)
        x[i, y0:y0 + 7, x0:x0 + 7] = rng.integers(180, 256, size=(7, 7))[: size - y0, : size - x0]
    return x.astype(np.uint8)


def write_fake_fmnist(root: Path, train_per_class: int = FAKE_TRAIN_PER_CLASS,
                      test_per_class: int = FAKE_TEST_PER_CLASS, seed: int = 0) -> Path:
    """Write the four Fashion-MNIST files into `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(FAKE_CLASSES), per_class)).astype(np.uint8)
        write_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", fake_images(labels, rng))
        write_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """A test that runs a config (its `threads` sets torch's) leaves the next one torch's one
    thread: a later test's rounding must not depend on which tests ran before it."""
    yield
    torch.set_num_threads(1)


@pytest.fixture
def fake_fmnist(tmp_path) -> Path:
    """A folder holding a 10-class fake Fashion-MNIST: 120 train / 40 test 28x28 images."""
    return write_fake_fmnist(tmp_path / "fashion-mnist")


@pytest.fixture(autouse=True)
def ccfs_cache(tmp_path, monkeypatch) -> Path:
    """Point the dataset cache at a per-test folder (autouse: no test writes ~/.cache)."""
    path = tmp_path / "ccfs-cache"
    monkeypatch.setenv("CCFS_CACHE", str(path))
    return path
