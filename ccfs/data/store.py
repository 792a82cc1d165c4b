"""A dataset store on disk, read through memory maps: datasets larger than memory.

`prepare_store(name, root, store)` decodes a dataset of the table once into a folder

    STORE/train_images.npy  uint8 [N, C, S, S]    STORE/train_labels.npy  int64 [N]
    STORE/test_images.npy   uint8 [M, C, S, S]    STORE/test_labels.npy   int64 [M]
    STORE/meta.json         dataset, classes, mean, std, image size, channels, counts, version

filling the arrays a batch of rows at a time (image folders class folder by class folder,
through the one image decoder), so memory stays one batch whatever N. The folder is built
under a temporary name and renamed into place at the end: an interrupted prepare leaves no
store. `open_store(store)` returns a `Dataset` whose images are torch tensors over the
memory maps; a batch reads its rows from the page cache (or the disk) when it gathers them.
Rows are in `load_dataset`'s order, so indices and scores mean the same with or without a
store.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ccfs.artifacts import atomic_dir, write_json
from ccfs.data import readers
from ccfs.data.cache import ChannelStats
from ccfs.data.datasets import Dataset, Split, dataset_spec, resolve_root
from ccfs.errors import DataError

FORMAT_VERSION = 1
BATCH_BYTES = 32 << 20  # bytes of images decoded and written at a time (bounds prepare's memory)
SPLITS = ("train", "test")

Batches = Iterator[tuple[np.ndarray, np.ndarray]]  # (uint8 [B, C, S, S], int64 [B])


@dataclass
class _Source:
    """One split to write: its row count and shape, and its batches in row order."""
    count: int
    shape: tuple[int, int, int]  # C, H, W
    batches: Callable[[int], Batches]  # rows per batch -> batches


# ----------------------------------------------------------------------------- sources

def _array_source(x: np.ndarray, y: np.ndarray) -> _Source:
    """A split a reader returned as arrays (IDX, CIFAR): written through as it is."""
    return _Source(len(x), tuple(x.shape[1:]),
                   lambda rows: ((x[s:s + rows], y[s:s + rows]) for s in range(0, len(x), rows)))


def _file_batches(paths: list[Path], labels, size: int, channels: int, rows: int) -> Batches:
    for s in range(0, len(paths), rows):
        yield readers._load_images(paths[s:s + rows], size, channels), np.asarray(labels[s:s + rows], np.int64)


def _folders_source(folders: list[Path], size: int, channels: int) -> _Source:
    """Class folders (label = position), listed once to count and again, one at a time, to
    decode, so no list of every file is ever held."""
    count = sum(len(readers._image_files(f)) for f in folders)

    def batches(rows: int) -> Batches:
        for label, folder in enumerate(folders):
            files = readers._image_files(folder)
            yield from _file_batches(files, [label] * len(files), size, channels, rows)

    return _Source(count, (channels, size, size), batches)


def _files_source(paths: list[Path], labels: list[int], size: int, channels: int) -> _Source:
    return _Source(len(paths), (channels, size, size),
                   lambda rows: _file_batches(paths, labels, size, channels, rows))


def _imagefolder_sources(root, image_size: int = 32, channels: int = 3):
    """`readers.read_imagefolder`'s checks and order, listing the files instead of decoding them."""
    root = readers._require_dir(Path(root), "pass the folder holding train/<class>/ and val/<class>/ image folders")
    readers._check_image_size(image_size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    train_dir = root / "train"
    test_dir = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataError(f"{root} has no {'train/' if not train_dir.is_dir() else 'val/ or test/'} folder; "
                        "expected train/<class>/<image> and val/<class>/<image> (or test/<class>/<image>)")
    classes = readers._class_folders(train_dir)
    readers._check_same_classes(train_dir, test_dir, classes, readers._class_folders(test_dir))
    return classes, {split: _folders_source([d / c for c in classes], image_size, channels)
                     for split, d in (("train", train_dir), ("test", test_dir))}


def _tiny_sources(root, image_size: int = 64):
    """`readers.read_tiny_imagenet`'s checks and order, listing the files instead of decoding them."""
    root = readers._inner_folder(Path(root), "tiny-imagenet-200", "wnids.txt")
    hint = readers._folder_hint(root, "tiny-imagenet-200", readers._TINY_URL)
    readers._require_dir(root, hint)
    readers._check_image_size(image_size)
    wnids = readers._read_wnids(root, hint)
    folders = [root / "train" / w / "images" for w in wnids]
    for wnid, folder in zip(wnids, folders):
        if not folder.is_dir():
            raise DataError(f"wnids.txt lists class {wnid} but {folder} does not exist; "
                            "the dataset is incomplete, re-download it")
    val_paths, val_y = readers._tiny_val(root, {w: i for i, w in enumerate(wnids)}, hint)
    return readers._tiny_class_names(root, wnids), {
        "train": _folders_source(folders, image_size, 3), "test": _files_source(val_paths, val_y, image_size, 3)}


# The image-file readers, streamed; every other reader returns arrays, written through.
STREAMED = {readers.read_imagefolder: _imagefolder_sources, readers.read_tiny_imagenet: _tiny_sources}


def _sources(name: str, root: Path, options: dict):
    spec = dataset_spec(name)
    lister = STREAMED.get(spec.reader)
    if lister is not None:
        return lister(root, **{**spec.options, **options})
    if options:
        raise DataError(f"{name} is stored at its own size; --image-size / --channels apply to "
                        "imagefolder and tiny-imagenet only")
    raw = spec.reader(root, **spec.options)
    return raw.classes, {"train": _array_source(raw.train_x, raw.train_y),
                         "test": _array_source(raw.test_x, raw.test_y)}


# ----------------------------------------------------------------------------- writing

class _NpyRows:
    """An .npy file created at full size by `open_memmap`, then filled a batch of rows at a
    time through a memory map of just those rows: each batch's pages leave the process when
    its map closes, so RSS stays one batch (the page cache keeps them, outside RSS)."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...]):
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self.path, self.dtype, self.shape, self.offset = path, np.dtype(dtype), shape, mm.offset
        del mm

    def write(self, start: int, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        window = np.memmap(self.path, self.dtype, "r+", offset=self.offset + start * row_bytes,
                           shape=(len(rows), *self.shape[1:]))
        window[:] = rows
        del window  # unmapped here


def _write_split(folder: Path, split: str, src: _Source, stats: ChannelStats | None, bar) -> None:
    images = _NpyRows(folder / f"{split}_images.npy", np.uint8, (src.count, *src.shape))
    labels = _NpyRows(folder / f"{split}_labels.npy", np.int64, (src.count,))
    rows = max(1, BATCH_BYTES // int(np.prod(src.shape)))
    n = 0
    for x, y in src.batches(rows):
        if n + len(x) > src.count or tuple(x.shape[1:]) != src.shape:
            raise DataError(f"the {split} files changed while being stored; run prepare again")
        images.write(n, x)
        labels.write(n, y)
        if stats is not None:
            stats.add(x)
        n += len(x)
        bar.update(len(x))
    if n != src.count:
        raise DataError(f"the {split} files changed while being stored; run prepare again")


def _fsync_all(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def prepare_store(name: str, root: str | None, store: str | Path, **options) -> Dataset:
    """Decode dataset `name` from `root` into a memory-mapped store at `store` (replacing
    an older one only once the new one is complete) and return it opened."""
    from tqdm import tqdm

    spec = dataset_spec(name)
    root_path = Path(resolve_root(name, root)).expanduser().resolve()
    classes, sources = _sources(name, root_path, options)
    stats = ChannelStats(sources["train"].shape[0]) if spec.mean is None else None
    with atomic_dir(store) as tmp, tqdm(total=sum(s.count for s in sources.values()), unit="img",
                                        desc=f"store {name}", disable=None, leave=False) as bar:
        for split in SPLITS:
            _write_split(tmp, split, sources[split], stats if split == "train" else None, bar)
        mean, std = (spec.mean, spec.std) if stats is None else stats.result()
        c, h, _ = sources["train"].shape
        write_json(tmp / "meta.json", {
            "format": "ccfs-store", "version": FORMAT_VERSION, "dataset": name, "root": str(root_path),
            "options": options, "classes": list(classes), "mean": list(mean), "std": list(std),
            "image_size": h, "channels": c, "train": sources["train"].count, "test": sources["test"].count})
        _fsync_all(tmp)
    return open_store(store)


# ----------------------------------------------------------------------------- reading

def _rerun(folder: Path, name: str = "NAME") -> str:
    return f"re-run `ccfs prepare --dataset {name} --root DIR --store {folder}`"


def _read_meta(folder: Path) -> dict:
    path = folder / "meta.json"
    if not path.is_file():
        raise DataError(f"{folder} is not a complete ccfs store (no meta.json); {_rerun(folder)}")
    try:
        meta = json.loads(path.read_text())
        keys = ("dataset", "classes", "mean", "std", "image_size", "channels", "train", "test")
        ok = meta.get("format") == "ccfs-store" and all(k in meta for k in keys)
    except (ValueError, AttributeError):
        ok = False
    if not ok or meta.get("version") != FORMAT_VERSION:
        raise DataError(f"{path} is not a ccfs store's meta.json of format version {FORMAT_VERSION}; "
                        f"{_rerun(folder)}")
    return meta


def _load(path: Path, mmap: bool, dtype, shape: tuple[int, ...], meta: dict) -> np.ndarray:
    """One store array, checked against meta.json; `mmap` opens it copy-on-write (pages read
    on demand, writable for torch, never written back)."""
    try:
        array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e}); {_rerun(path.parent, meta['dataset'])}") from None
    if array.dtype != np.dtype(dtype) or array.shape != shape:
        raise DataError(f"{path} is {array.dtype} {list(array.shape)}, its meta.json says {np.dtype(dtype)} "
                        f"{list(shape)}; {_rerun(path.parent, meta['dataset'])}")
    return array


def _open_split(folder: Path, split: str, meta: dict) -> Split:
    c, s, n = meta["channels"], meta["image_size"], meta[split]
    images = _load(folder / f"{split}_images.npy", True, np.uint8, (n, c, s, s), meta)
    labels = _load(folder / f"{split}_labels.npy", False, np.int64, (n,), meta)
    if n and (labels.min() < 0 or labels.max() >= len(meta["classes"])):
        raise DataError(f"{folder / f'{split}_labels.npy'} holds labels outside 0..{len(meta['classes']) - 1}; "
                        f"{_rerun(folder, meta['dataset'])}")
    return Split(torch.from_numpy(images), torch.from_numpy(labels), mapped=True)


def _check_expected(folder: Path, meta: dict, name, image_size, channels) -> None:
    for key, want, got in (("name", name, meta["dataset"]), ("image_size", image_size, meta["image_size"]),
                           ("channels", channels, meta["channels"])):
        if want is not None and want != got:
            raise DataError(f"the store {folder} holds {meta['dataset']} at {meta['channels']}x"
                            f"{meta['image_size']}x{meta['image_size']}, but data.{key}={want}; set data.{key}="
                            f"{got} or prepare a store for {want}")


def open_store(store: str | Path, name: str | None = None, image_size: int | None = None,
               channels: int | None = None) -> Dataset:
    """The dataset in a store, its images memory-mapped. Given `name` / `image_size` /
    `channels` (the config's), the store must hold that. The table's mean / std win over the
    stored ones, as for the tensor cache."""
    folder = Path(store).expanduser()
    meta = _read_meta(folder)
    _check_expected(folder, meta, name, image_size, channels)
    train, test = (_open_split(folder, split, meta) for split in SPLITS)
    spec = dataset_spec(meta["dataset"])
    mean = spec.mean if spec.mean is not None else meta["mean"]
    std = spec.std if spec.std is not None else meta["std"]
    return Dataset(name=meta["dataset"], train=train, test=test, classes=list(meta["classes"]),
                   mean=tuple(mean), std=tuple(std))
