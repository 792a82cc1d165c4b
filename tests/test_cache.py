"""Dataset table + tensor cache, against a tiny fake Fashion-MNIST in the real IDX format."""
from __future__ import annotations

import dataclasses
import gzip
import os
import time

import numpy as np
import pytest
import torch

from ccfs.data import datasets
from ccfs.data.cache import cache_dir, load_dataset
from ccfs.errors import DataError
from conftest import FAKE_CLASSES, FAKE_TEST_PER_CLASS, FAKE_TRAIN_PER_CLASS, write_idx_gz


def labels_on_disk(root, prefix):
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz") as f:
        return np.frombuffer(f.read()[8:], dtype=np.uint8).astype(np.int64)


def forbid_decoding(monkeypatch):
    """Replace the fashion-mnist reader with one that fails the test if called."""
    def boom(*a, **k):
        raise AssertionError("the reader was called: the cache was not used")
    spec = datasets.DATASETS["fashion-mnist"]
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", dataclasses.replace(spec, reader=boom))


def test_cache_dir_follows_env(ccfs_cache):
    assert cache_dir() == ccfs_cache


def test_fake_fashion_mnist_loads(fake_fmnist, ccfs_cache):
    d = load_dataset("fashion-mnist", str(fake_fmnist))
    n, m = FAKE_CLASSES * FAKE_TRAIN_PER_CLASS, FAKE_CLASSES * FAKE_TEST_PER_CLASS
    assert d.train.images.shape == (n, 1, 28, 28) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (m, 1, 28, 28)
    assert d.train.labels.dtype == torch.int64
    assert torch.equal(d.train.labels, torch.from_numpy(labels_on_disk(fake_fmnist, "train")))
    assert torch.equal(d.test.labels, torch.from_numpy(labels_on_disk(fake_fmnist, "t10k")))
    assert torch.equal(d.train.labels.bincount(), torch.full((FAKE_CLASSES,), FAKE_TRAIN_PER_CLASS))
    assert d.num_classes == 10 and d.classes[0] == "t-shirt/top" and d.classes[9] == "ankle boot"
    assert d.channels == 1 and d.image_size == 28
    assert d.mean == pytest.approx((0.2861,)) and d.std == pytest.approx((0.3530,))
    assert d.summary() == "fashion-mnist: 120 train / 40 test, 10 classes, images 1x28x28"
    assert len(list(ccfs_cache.glob("fashion-mnist-*.pt"))) == 1


def test_second_load_uses_the_cache_and_is_fast(fake_fmnist, monkeypatch):
    first = load_dataset("fashion-mnist", str(fake_fmnist))
    forbid_decoding(monkeypatch)
    t0 = time.perf_counter()
    again = load_dataset("fashion-mnist", str(fake_fmnist))
    assert time.perf_counter() - t0 < 1.0
    assert torch.equal(again.train.images, first.train.images)
    assert torch.equal(again.test.labels, first.test.labels)
    assert again.classes == first.classes and again.mean == first.mean


def test_use_cache_false_decodes_and_writes_nothing(fake_fmnist, ccfs_cache):
    load_dataset("fashion-mnist", str(fake_fmnist), use_cache=False)
    assert not ccfs_cache.exists() or not any(ccfs_cache.iterdir())


def test_changed_files_are_decoded_again(fake_fmnist, monkeypatch):
    load_dataset("fashion-mnist", str(fake_fmnist))
    path = fake_fmnist / "t10k-labels-idx1-ubyte.gz"
    new = (labels_on_disk(fake_fmnist, "t10k") + 1) % 10
    write_idx_gz(path, new.astype(np.uint8))
    st = os.stat(path)
    os.utime(path, (st.st_atime, st.st_mtime + 10))  # the key uses whole-second mtimes
    assert torch.equal(load_dataset("fashion-mnist", str(fake_fmnist)).test.labels, torch.from_numpy(new))


def test_damaged_cache_is_decoded_again(fake_fmnist, ccfs_cache):
    first = load_dataset("fashion-mnist", str(fake_fmnist))
    (cached,) = ccfs_cache.glob("fashion-mnist-*.pt")
    cached.write_bytes(b"not a torch file")
    again = load_dataset("fashion-mnist", str(fake_fmnist))
    assert torch.equal(again.train.images, first.train.images)
    assert torch.load(cached, weights_only=True)["train_x"].shape == first.train.images.shape  # rewritten


def test_truncated_gz_raises_and_caches_nothing(fake_fmnist, ccfs_cache):
    path = fake_fmnist / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", str(fake_fmnist))
    assert not ccfs_cache.exists() or not any(ccfs_cache.iterdir())  # no cache, no temp file


def test_missing_file_raises(fake_fmnist):
    (fake_fmnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", str(fake_fmnist))


def test_missing_root_raises(tmp_path, ccfs_cache):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("fashion-mnist", str(tmp_path / "nowhere"))
    assert not ccfs_cache.exists()


def test_unknown_dataset_lists_names(tmp_path):
    with pytest.raises(DataError, match="unknown dataset") as e:
        load_dataset("imagenet-22k", str(tmp_path))
    for name in datasets.DATASETS:
        assert name in str(e.value)


def test_imagefolder_needs_a_root():
    with pytest.raises(DataError, match="no default folder"):
        load_dataset("imagefolder", None)


def test_split_subset_and_len(fake_fmnist):
    d = load_dataset("fashion-mnist", str(fake_fmnist))
    sub = d.train.subset([5, 0, 5])
    assert len(sub) == 3
    assert torch.equal(sub.images[0], d.train.images[5]) and torch.equal(sub.images[1], d.train.images[0])
    assert torch.equal(sub.labels, d.train.labels[[5, 0, 5]])
    assert len(d.train.subset([])) == 0


# ---------------------------------------------------------------- validation split

def test_validation_split_is_class_balanced_disjoint_and_fixed(fake_fmnist):
    from ccfs.data.datasets import carve_validation

    d = load_dataset("fashion-mnist", str(fake_fmnist))
    v = carve_validation(d, 20)
    assert len(v.val) == 20 and len(v.train) == 100
    assert torch.bincount(v.val.labels, minlength=10).tolist() == [2] * 10
    assert set(v.train_rows.tolist()).isdisjoint(v.val_rows.tolist())
    assert sorted(v.train_rows.tolist() + v.val_rows.tolist()) == list(range(120))
    assert torch.equal(v.val.images, d.train.images[v.val_rows])
    assert torch.equal(v.train.labels, d.train.labels[v.train_rows])
    assert torch.equal(v.file_train_labels, d.train.labels)
    assert v.file_rows([0, 5]) == v.train_rows[[0, 5]].tolist()
    assert torch.equal(carve_validation(d, 20).val_rows, v.val_rows)  # a fixed seed
    assert "100 train + 20 validation / 40 test" in v.summary()


@pytest.mark.parametrize("size, message", [(15, "multiple of the 10 classes"), (120, "has only 12")])
def test_validation_split_refuses_impossible_sizes(fake_fmnist, size, message):
    from ccfs.data.datasets import carve_validation

    with pytest.raises(DataError, match=message):
        carve_validation(load_dataset("fashion-mnist", str(fake_fmnist)), size)
