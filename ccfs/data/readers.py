"""Readers for datasets in their standard on-disk formats.

Each reader takes a root folder (plus options) and returns a `RawDataset` of numpy arrays:
uint8 images `[N, C, H, W]` and int64 labels. Readers raise `DataError` with a message
that says which file is wrong and how to fix it. Caching lives in `cache.py`.
"""
from __future__ import annotations

import codecs
import gzip
import os
import pickle
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ccfs.data.images import IMAGE_EXTENSIONS, decode_image, image_files
from ccfs.errors import DataError


@dataclass
class RawDataset:
    train_x: np.ndarray  # uint8 [N, C, H, W]
    train_y: np.ndarray  # int64 [N]
    test_x: np.ndarray  # uint8 [M, C, H, W]
    test_y: np.ndarray  # int64 [M]
    classes: list[str]


def _require_dir(root: Path, hint: str) -> Path:
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; {hint}")
    return root


# ----------------------------------------------------------------------------- IDX (MNIST)

_IDX_DTYPES = {0x08: np.uint8}


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root} has no {stem}[.gz]; point --root / data.root at the folder with the four IDX files")


def read_idx_file(path: Path) -> np.ndarray:
    """Decode one IDX file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; the file is truncated or corrupt, re-download it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (header incomplete)")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(shape)) if ndim else 0
    if len(data) - header != expected:
        raise DataError(f"{path} holds {len(data) - header} bytes of data, its header says {expected}; "
                        "the file is truncated or corrupt, re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle boot"]
MNIST_CLASSES = [str(i) for i in range(10)]


def read_idx(root: str | Path, classes: list[str]) -> RawDataset:
    """MNIST-style dataset: train/t10k images and labels as IDX files, gzip or not."""
    root = _require_dir(Path(root), "install it (Fashion-MNIST: `apt-get install -y dataset-fashion-mnist`) "
                                    "or pass the folder holding the IDX files")
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx_file(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
        y = read_idx_file(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{root}: {split} images {x.shape} and labels {y.shape} do not match")
        if y.max(initial=0) >= len(classes):
            raise DataError(f"{root}: {split} labels go up to {y.max()}, expected fewer than {len(classes)} classes")
        arrays[split] = (x[:, None].copy(), y.astype(np.int64))
    return RawDataset(*arrays["train"], *arrays["test"], classes=list(classes))


def _require_file(root: Path, name: str, hint: str) -> Path:
    if not (root / name).is_file():
        raise DataError(f"{root} has no file {name}; {hint}")
    return root / name


def _inner_folder(root: Path, folder: str, marker: str) -> Path:
    """Both layouts a user may point at: the dataset's own folder (holding `marker`), or the
    folder that holds it (`root/folder`, as torchvision's `CIFAR10(root)` and the official
    CCFS `--data-path` take)."""
    if not (root / marker).exists() and (root / folder / marker).exists():
        return root / folder
    return root


def _folder_hint(root: Path, folder: str, download: str) -> str:
    """How to fix a wrong root: name the sub-folder if the user passed its parent."""
    if (root / folder).is_dir():
        return f"did you mean --root {root / folder}?"
    return f"pass the extracted {folder} folder as --root / data.root ({download})"


# ----------------------------------------------------------------------------- CIFAR (python pickles)

_CIFAR_URL = "download the python version from https://www.cs.toronto.edu/~kriz/cifar.html and extract it"
_CIFAR_PIXELS = 3 * 32 * 32  # values per image, stored row-major as [C, H, W]

# The official pickles hold only numpy arrays, lists and bytes; refusing every other global
# means a tampered file cannot run code when it is loaded.
# Module names: numpy 1 wrote `numpy.core`, numpy 2 writes `numpy._core`.
_PICKLE_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0] for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): np.uint8(0).__reduce__()[0] for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): np.zeros(0).__reduce_ex__(5)[0] for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at pickle protocol 2
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise _RefusedGlobal(f"it references {module}.{name}, which a CIFAR file never holds")
        return _PICKLE_GLOBALS[module, name]


def _unpickle(root: Path, name: str, hint: str) -> dict:
    path = _require_file(root, name, hint)
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise DataError(f"refusing to unpickle {path}: {e}; replace it with the official file") from None
    except Exception as e:  # corrupt bytes surface as any of a dozen exception types
        raise DataError(f"cannot unpickle {path} ({type(e).__name__}: {e}); "
                        "the file is truncated or corrupt, re-download it") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR file; re-download it")
    return obj


def _entry(obj: dict, key: bytes, path: Path):
    """obj[key], accepting str keys too (files re-pickled under Python 3)."""
    for k in (key, key.decode()):
        if k in obj:
            return obj[k]
    raise DataError(f"{path} has no {key!r} entry (it has {sorted(map(str, obj))}); "
                    "it is not the expected CIFAR file, re-download it")


def _class_names(root: Path, name: str, key: bytes, hint: str) -> list[str]:
    names = _entry(_unpickle(root, name, hint), key, root / name)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{root / name}: {key!r} is not a non-empty list of class names; re-download it")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _cifar_batch(root: Path, name: str, label_key: bytes, num_classes: int, *, hint: str):
    """One pickled batch → uint8 [N, 3, 32, 32] images and int64 [N] labels, validated."""
    path = root / name
    obj = _unpickle(root, name, hint)
    data, labels = np.asarray(_entry(obj, b"data", path)), np.asarray(_entry(obj, label_key, path))
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{path}: {label_key!r} is not a flat list of integer labels; re-download it")
    if data.dtype != np.uint8 or data.size != len(labels) * _CIFAR_PIXELS:
        raise DataError(f"{path}: b'data' is {data.dtype} {list(data.shape)}, expected uint8 "
                        f"[{len(labels)}, {_CIFAR_PIXELS}] to match its {len(labels)} labels; "
                        "the file is corrupt, re-download it")
    labels = labels.astype(np.int64)
    _check_labels(labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32), labels


def _check_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(f"{path}: label {bad[0]} is out of range for {num_classes} classes "
                        f"(expected 0..{num_classes - 1}); the file is corrupt, re-download it")


def read_cifar10(root: str | Path) -> RawDataset:
    """CIFAR-10 python version: `data_batch_1..5`, `test_batch`, `batches.meta`, in `root` or
    in `root/cifar-10-batches-py`."""
    root = _inner_folder(Path(root), "cifar-10-batches-py", "batches.meta")
    hint = _folder_hint(root, "cifar-10-batches-py", _CIFAR_URL)
    _require_dir(root, hint)
    classes = _class_names(root, "batches.meta", b"label_names", hint)
    train = [_cifar_batch(root, f"data_batch_{i}", b"labels", len(classes), hint=hint) for i in range(1, 6)]
    test_x, test_y = _cifar_batch(root, "test_batch", b"labels", len(classes), hint=hint)
    return RawDataset(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                      test_x, test_y, classes)


def read_cifar100(root: str | Path) -> RawDataset:
    """CIFAR-100 python version: `train`, `test`, `meta`, with the 100 fine labels, in `root`
    or in `root/cifar-100-python`."""
    root = _inner_folder(Path(root), "cifar-100-python", "meta")
    hint = _folder_hint(root, "cifar-100-python", _CIFAR_URL)
    _require_dir(root, hint)
    classes = _class_names(root, "meta", b"fine_label_names", hint)
    train_x, train_y = _cifar_batch(root, "train", b"fine_labels", len(classes), hint=hint)
    test_x, test_y = _cifar_batch(root, "test", b"fine_labels", len(classes), hint=hint)
    return RawDataset(train_x, train_y, test_x, test_y, classes)


# ----------------------------------------------------------------------------- image files

_DECODE_THREADS = min(8, os.cpu_count() or 1)  # Pillow decodes in C with the GIL released


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer (pixels), got {image_size!r}")


def _image_files(folder: Path) -> list[Path]:
    """Image files in one class folder, sorted by name; an empty folder is an error."""
    files = image_files(folder)
    if not files:
        raise DataError(f"class folder {folder} holds no images ({' '.join(IMAGE_EXTENSIONS)}); "
                        "add images to it or remove it")
    return files


def _load_images(paths: list[Path], size: int, channels: int) -> np.ndarray:
    """Decode image files in parallel → uint8 [N, channels, size, size], each resized to size."""
    out = np.empty((len(paths), channels, size, size), np.uint8)  # [N, C, H, W]

    def load(i: int) -> None:
        out[i] = decode_image(paths[i], channels, (size, size), resize=True)

    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        for _ in pool.map(load, range(len(paths))):  # re-raises the first DataError
            pass
    return out


# ----------------------------------------------------------------------------- Tiny ImageNet

_TINY_URL = "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it"


def _read_wnids(root: Path, hint: str) -> list[str]:
    path = _require_file(root, "wnids.txt", hint)
    wnids = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not wnids:
        raise DataError(f"no classes found: {path} is empty; re-download the dataset")
    if len(set(wnids)) != len(wnids):
        dup = next(w for w in wnids if wnids.count(w) > 1)
        raise DataError(f"{path} lists class {dup} twice; re-download the dataset")
    return wnids


def _tiny_class_names(root: Path, wnids: list[str]) -> list[str]:
    """First name of each wnid from the optional words.txt; duplicated names keep their wnid."""
    words = {}
    if (root / "words.txt").is_file():
        for line in (root / "words.txt").read_text(errors="replace").splitlines():
            wnid, _, names = line.partition("\t")
            if names.strip():
                words[wnid.strip()] = names.split(",")[0].strip()
    names = [words.get(w, w) for w in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]


def _tiny_train(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DataError(f"wnids.txt lists class {wnid} but {folder} does not exist; "
                            "the dataset is incomplete, re-download it")
        files = _image_files(folder)
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _tiny_val(root: Path, index: dict[str, int], hint: str) -> tuple[list[Path], list[int]]:
    """Validation images and labels in the order of val/val_annotations.txt."""
    path = _require_file(root / "val", "val_annotations.txt", hint)
    paths, labels = [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path} line {n} is not 'filename<TAB>wnid<TAB>bbox'; re-download the dataset")
        image, wnid = root / "val" / "images" / fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DataError(f"{path} line {n} names class {wnid}, which wnids.txt does not list")
        if not image.is_file():
            raise DataError(f"{path} line {n} names {image}, which does not exist; re-download the dataset")
        paths.append(image)
        labels.append(index[wnid])
    if not paths:
        raise DataError(f"{path} lists no validation images; re-download the dataset")
    return paths, labels


def read_tiny_imagenet(root: str | Path, image_size: int = 64) -> RawDataset:
    """Tiny ImageNet (tiny-imagenet-200, in `root` or `root/tiny-imagenet-200`): 200 classes in
    wnids.txt order; val is the test split."""
    root = _inner_folder(Path(root), "tiny-imagenet-200", "wnids.txt")
    hint = _folder_hint(root, "tiny-imagenet-200", _TINY_URL)
    _require_dir(root, hint)
    _check_image_size(image_size)
    wnids = _read_wnids(root, hint)
    train_paths, train_y = _tiny_train(root, wnids)
    val_paths, val_y = _tiny_val(root, {w: i for i, w in enumerate(wnids)}, hint)
    return RawDataset(_load_images(train_paths, image_size, 3), np.array(train_y, np.int64),
                      _load_images(val_paths, image_size, 3), np.array(val_y, np.int64),
                      _tiny_class_names(root, wnids))


# ----------------------------------------------------------------------------- image folders

def _class_folders(split_dir: Path) -> list[str]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"no classes found in {split_dir}; expected one sub-folder of images per class, "
                        f"e.g. {split_dir / 'cat' / '0001.png'}")
    return classes


def _read_split(split_dir: Path, classes: list[str], size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = _image_files(split_dir / name)
        paths += files
        labels += [label] * len(files)
    return _load_images(paths, size, channels), np.array(labels, np.int64)


def _check_same_classes(train_dir: Path, test_dir: Path, train: list[str], test: list[str]) -> None:
    missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if missing or extra:
        parts = [f"{what} {', '.join(names)}" for what, names in (("lacks", missing), ("has extra", extra)) if names]
        raise DataError(f"the class folders of {test_dir} differ from {train_dir}: it {', '.join(parts)}; "
                        "both splits need the same class sub-folders")


def read_imagefolder(root: str | Path, image_size: int = 32, channels: int = 3) -> RawDataset:
    """`train/<class>/*` and `val/<class>/*` (or `test/<class>/*`) image trees; classes in sorted order."""
    root = _require_dir(Path(root), "pass the folder holding train/<class>/ and val/<class>/ image folders")
    _check_image_size(image_size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    train_dir = root / "train"
    test_dir = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    for name, missing in (("train/", not train_dir.is_dir()), ("val/ or test/", test_dir is None)):
        if missing:
            raise DataError(f"{root} has no {name} folder; expected train/<class>/<image> "
                            "and val/<class>/<image> (or test/<class>/<image>)")
    classes = _class_folders(train_dir)
    _check_same_classes(train_dir, test_dir, classes, _class_folders(test_dir))
    return RawDataset(*_read_split(train_dir, classes, image_size, channels),
                      *_read_split(test_dir, classes, image_size, channels), classes=classes)
