"""A dataset store on disk, read a batch of rows at a time: datasets larger than memory.

`prepare_store(name, root, store)` decodes a dataset of the table once into a folder

    STORE/train_images.npy  uint8 [N, C, S, S]    STORE/train_labels.npy  int64 [N]
    STORE/test_images.npy   uint8 [M, C, S, S]    STORE/test_labels.npy   int64 [M]
    STORE/meta.json         dataset, classes, mean, std, image size, channels, counts, version

filling the arrays a batch of rows at a time (image folders class folder by class folder,
through the one image decoder), so memory stays one batch whatever N. The folder is built
under a temporary name and renamed into place at the end: an interrupted prepare leaves no
store. `open_store(store)` returns a `Dataset` whose images are `StoreRows`: indexed like
a tensor, they read just the rows asked for (`os.preadv`, through the page cache, which
serves repeated reads) into a tensor of the batch. The files are never memory-mapped for
reading: every mapped page a pass touches would count in the process's RSS, so one epoch
over a store larger than memory would look like it held the whole store. Rows are in
`load_dataset`'s order, so indices and scores mean the same with or without a store.
"""
from __future__ import annotations

import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

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


def _file_batches(paths: list[Path], labels, *, size: int, channels: int, rows: int) -> Batches:
    for s in range(0, len(paths), rows):
        yield readers._load_images(paths[s:s + rows], size, channels), np.asarray(labels[s:s + rows], np.int64)


def _folders_source(folders: list[Path], size: int, channels: int) -> _Source:
    """Class folders (label = position), listed once to count and again, one at a time, to
    decode, so no list of every file is ever held."""
    count = sum(len(readers._image_files(f)) for f in folders)

    def batches(rows: int) -> Batches:
        for label, folder in enumerate(folders):
            files = readers._image_files(folder)
            yield from _file_batches(files, [label] * len(files), size=size, channels=channels, rows=rows)

    return _Source(count, (channels, size, size), batches)


def _files_source(paths: list[Path], labels: list[int], size: int, channels: int) -> _Source:
    return _Source(len(paths), (channels, size, size),
                   lambda rows: _file_batches(paths, labels, size=size, channels=channels, rows=rows))


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


def _write_split(folder: Path, split: str, src: _Source, *, stats: ChannelStats | None, bar) -> None:
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
    """Decode dataset `name` from `root` into a store at `store` (replacing
    an older one only once the new one is complete) and return it opened."""
    spec = dataset_spec(name)
    root_path = Path(resolve_root(name, root)).expanduser().resolve()
    classes, sources = _sources(name, root_path, options)
    stats = ChannelStats(sources["train"].shape[0]) if spec.mean is None else None
    with atomic_dir(store) as tmp, tqdm(total=sum(s.count for s in sources.values()), unit="img",
                                        desc=f"store {name}", disable=None, leave=False) as bar:
        for split in SPLITS:
            _write_split(tmp, split, sources[split], stats=stats if split == "train" else None, bar=bar)
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


class _Descriptor:
    """An open store file, closed when the last reader holding it goes: one descriptor for
    the life of a reader and of every view taken from it, so a store replaced by a new
    prepare (renamed into place) does not change the rows under a running stage."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self.fd)


class StoreRows:
    """A store's images [N, C, H, W], read on demand: `rows[idx]` (an index tensor, list or
    array, in any order, with repeats) and `rows[a:b]` return an in-memory uint8 tensor of
    those rows, as indexing a tensor would; `shape`, `dtype`, `device` and `len` are the
    tensor's. Rows come in with `os.preadv` rather than through a memory map, so only the
    batch being read counts in the process's RSS, however much of the store a pass reads.

    With a `row_map` (int64 [M], rows of the file) it is a view of M rows: row i is the
    file's row `row_map[i]`, for every way of reading it (indexing, `head`, `numpy()`, `to`,
    pickling). `take(rows)` makes one; nothing is read until it is indexed."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], row_map=None, *, _file=None):
        self.path, self.offset, self.file_shape = Path(path), offset, torch.Size(shape)
        self.dtype, self.device = torch.uint8, torch.device("cpu")
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64))
        self.row_map = None if row_map is None else _check_map(row_map, self.file_shape[0])
        self._map = None if self.row_map is None else self.row_map.numpy()
        self.shape = self.file_shape if self.row_map is None else \
            torch.Size((len(self.row_map), *self.file_shape[1:]))
        self._file = _file if _file is not None else _Descriptor(self.path)

    def __reduce__(self):  # a copy in another process opens the file again (and keeps the map)
        return StoreRows, (self.path, self.offset, tuple(self.file_shape), self.row_map)

    def __repr__(self) -> str:
        view = "" if self.row_map is None else f", a view of {len(self)} of its {self.file_shape[0]} rows"
        return f"StoreRows({str(self.path)!r}, shape={list(self.shape)}{view})"

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        return torch.from_numpy(self.read(idx))

    def _view(self, file_rows, file_shape=None) -> "StoreRows":
        return StoreRows(self.path, self.offset, tuple(file_shape or self.file_shape), file_rows, _file=self._file)

    def take(self, rows) -> "StoreRows":
        """A view whose row i is this one's row `rows[i]` (a 1-d integer or bool index, or a
        slice); nothing is read here. The file is not copied: its rows are read in place
        when the view is indexed."""
        picked = self._index(rows)
        if picked.ndim != 1:
            raise IndexError(f"take needs a 1-d index or a slice, not {type(rows).__name__} {rows!r}")
        return self._view(torch.from_numpy(self._file_rows(picked)))

    def head(self, n: int) -> "StoreRows":
        """The first `n` rows, read as lazily (nothing is read here)."""
        n = max(0, min(n, len(self)))
        if self.row_map is None:
            return self._view(None, (n, *self.shape[1:]))
        return self._view(self.row_map[:n])

    def numpy(self) -> "_NumpyRows":
        """A view whose indexing returns numpy arrays (what report plots index). Unlike a
        tensor's `.numpy()`, it reads only the rows indexed, never the whole store."""
        return _NumpyRows(self)

    def to(self, device) -> "StoreRows | torch.Tensor":
        """Itself on the host (as a tensor's `.to` returns the tensor); on another device,
        every row read and moved there."""
        return self if torch.device(device) == self.device else self[:].to(device)

    def read(self, idx) -> np.ndarray:
        """Rows `idx` (int, slice, or 1-d integer or bool index) as a uint8 array in memory."""
        if isinstance(idx, slice) and self._map is None:
            start, stop, step = idx.indices(len(self))
            if step == 1:  # one read
                out = np.empty((max(0, stop - start), *self.shape[1:]), np.uint8)
                self._read_into(start, out)
                return out
        rows = self._index(idx)
        out = self._gather(self._file_rows(rows).reshape(-1))
        return out[0] if rows.ndim == 0 else out

    def _index(self, idx) -> np.ndarray:
        """An index of this reader's rows as int64 row numbers (0 .. len - 1), checked."""
        if isinstance(idx, slice):
            return np.arange(*idx.indices(len(self)), dtype=np.int64)
        rows = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)
        if rows.dtype == np.bool_:
            if rows.ndim != 1 or len(rows) != len(self):
                raise IndexError(f"a mask of shape {list(rows.shape)} does not fit {len(self)} store rows")
            rows = np.flatnonzero(rows)  # a mask, as a tensor takes one
        if rows.ndim > 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise IndexError(f"store rows take an int, a slice or a 1-d integer index, not {type(idx).__name__} "
                             f"of shape {list(rows.shape)}")
        n, rows = len(self), rows.astype(np.int64)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index {int(rows.max() if rows.max() >= n else rows.min())} is out of range "
                             f"for {n} store rows")
        return np.where(rows < 0, rows + n, rows)

    def _file_rows(self, rows: np.ndarray) -> np.ndarray:
        """This reader's rows -> the file's rows (through the map of a view)."""
        return rows if self._map is None else self._map[rows]

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Each distinct row read once, in file order, a run of consecutive rows in one read
        (sequential reads are what the page cache and the disk serve fastest); then put in
        the order asked."""
        distinct, where = np.unique(rows, return_inverse=True)
        where = where.reshape(-1)
        out = np.empty((len(distinct), *self.shape[1:]), np.uint8)
        cuts = (np.flatnonzero(np.diff(distinct) != 1) + 1).tolist()
        for a, b in zip([0, *cuts], [*cuts, len(distinct)]):
            if b > a:
                self._read_into(int(distinct[a]), out[a:b])
        return out if len(distinct) == len(rows) and (where == np.arange(len(rows))).all() else out[where]

    def _read_into(self, first: int, out: np.ndarray) -> None:
        """File rows first .. first + len(out) into `out` (C-contiguous); a read may return
        less than asked (Linux caps one at ~2 GiB), so read until full."""
        view, pos = memoryview(out.reshape(-1)), self.offset + first * self.row_bytes
        while view:
            got = os.preadv(self._file.fd, [view], pos)
            if got == 0:
                raise DataError(f"{self.path} ends before row {first + len(out)}; {_rerun(self.path.parent)}")
            view, pos = view[got:], pos + got


def _check_map(row_map, file_rows: int) -> torch.Tensor:
    """A view's row map as a 1-d int64 tensor of file rows in 0 .. file_rows - 1."""
    rows = torch.as_tensor(np.asarray(row_map) if not isinstance(row_map, torch.Tensor) else row_map)
    if rows.ndim != 1 or (rows.numel() and (rows.is_floating_point() or rows.dtype == torch.bool)):
        raise IndexError(f"a row map is a 1-d integer index, not {rows.dtype} of shape {list(rows.shape)}")
    rows = rows.to(torch.long).cpu().clone()  # its own copy: the caller's tensor may change
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= file_rows):
        raise IndexError(f"a row map names row {int(rows.min()) if int(rows.min()) < 0 else int(rows.max())}, "
                         f"outside the store's {file_rows} rows")
    return rows


class _NumpyRows:
    """`StoreRows.numpy()`: the same rows; indexing returns numpy arrays."""

    def __init__(self, rows: StoreRows):
        self.rows, self.shape, self.dtype = rows, tuple(rows.shape), np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        return self.rows.read(idx)


def _npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """An .npy file's dtype, shape and data offset, read from its header alone; ValueError if
    the file is shorter than they say."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if header is None:
            raise ValueError(f"unknown .npy version {version}")
        shape, fortran_order, dtype = header(f)
        offset = f.tell()
    if fortran_order:
        raise ValueError("Fortran-ordered array")
    size = offset + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if os.path.getsize(path) < size:
        raise ValueError(f"the file has {os.path.getsize(path)} bytes, its header says {size}")
    return dtype, shape, offset


def _load(path: Path, dtype, shape: tuple[int, ...], meta: dict, *, lazy: bool = False):
    """One store array, checked against meta.json: read whole into memory, or with `lazy` a
    `StoreRows` that reads rows when indexed (the images)."""
    try:
        if lazy:
            got_dtype, got_shape, offset = _npy_header(path)
        else:
            array = np.load(path, allow_pickle=False)
            got_dtype, got_shape = array.dtype, array.shape
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e}); {_rerun(path.parent, meta['dataset'])}") from None
    if got_dtype != np.dtype(dtype) or got_shape != shape:
        raise DataError(f"{path} is {got_dtype} {list(got_shape)}, its meta.json says {np.dtype(dtype)} "
                        f"{list(shape)}; {_rerun(path.parent, meta['dataset'])}")
    return StoreRows(path, offset, shape) if lazy else array


def _open_split(folder: Path, split: str, meta: dict) -> Split:
    c, s, n = meta["channels"], meta["image_size"], meta[split]
    images = _load(folder / f"{split}_images.npy", np.uint8, (n, c, s, s), meta, lazy=True)
    labels = _load(folder / f"{split}_labels.npy", np.int64, (n,), meta)
    if n and (labels.min() < 0 or labels.max() >= len(meta["classes"])):
        raise DataError(f"{folder / f'{split}_labels.npy'} holds labels outside 0..{len(meta['classes']) - 1}; "
                        f"{_rerun(folder, meta['dataset'])}")
    return Split(images, torch.from_numpy(labels), mapped=True)


def _check_expected(folder: Path, meta: dict, *, name, image_size, channels) -> None:
    for key, want, got in (("name", name, meta["dataset"]), ("image_size", image_size, meta["image_size"]),
                           ("channels", channels, meta["channels"])):
        if want is not None and want != got:
            raise DataError(f"the store {folder} holds {meta['dataset']} at {meta['channels']}x"
                            f"{meta['image_size']}x{meta['image_size']}, but data.{key}={want}; set data.{key}="
                            f"{got} or prepare a store for {want}")


def open_store(store: str | Path, name: str | None = None, image_size: int | None = None,
               channels: int | None = None) -> Dataset:
    """The dataset in a store, its images read on demand (`StoreRows`). Given `name` / `image_size` /
    `channels` (the config's), the store must hold that. The table's mean / std win over the
    stored ones, as for the tensor cache."""
    folder = Path(store).expanduser()
    meta = _read_meta(folder)
    _check_expected(folder, meta, name=name, image_size=image_size, channels=channels)
    train, test = (_open_split(folder, split, meta) for split in SPLITS)
    spec = dataset_spec(meta["dataset"])
    mean = spec.mean if spec.mean is not None else meta["mean"]
    std = spec.std if spec.std is not None else meta["std"]
    return Dataset(name=meta["dataset"], train=train, test=test, classes=list(meta["classes"]),
                   mean=tuple(mean), std=tuple(std))
