"""Readers against tiny files written in each real on-disk format, and every user error."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from ccfs.data import readers
from ccfs.data.images import decode_image, image_files
from ccfs.errors import DataError

# ----------------------------------------------------------------------------- writers


def write_idx(path, array: np.ndarray) -> None:
    """IDX format: magic 0x0000 08 <ndim>, big-endian uint32 dims, then raw uint8 data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    path.write_bytes(payload)


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2 did for the official CIFAR files: protocol 2, every str and
    bytes as a SHORT_BINSTRING / BINSTRING, numpy globals under `numpy.core.multiarray`."""
    dispatch = pickle._Pickler.dispatch.copy()
    GLOBALS = {np.ndarray: b"numpy\nndarray\n", np.dtype: b"numpy\ndtype\n",
               np.zeros(0).__reduce__()[0]: b"numpy.core.multiarray\n_reconstruct\n"}

    def save_bytes(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin-1"))

    def save_global(self, obj, name=None):
        self.write(pickle.GLOBAL + self.GLOBALS[obj])
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str
    dispatch[type] = save_global


def write_pickle(path, obj, fmt="python2") -> None:
    if fmt == "python2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        path.write_bytes(buf.getvalue())
    else:
        path.write_bytes(pickle.dumps(obj, protocol=fmt))


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """[N, 3, 32, 32] → [N, 3072] as documented: 1024 red values, 1024 green, 1024 blue, each row-major."""
    return np.stack([np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()]) for img in images])


def random_images(rng, n: int, c: int = 3, size: int = 32) -> np.ndarray:
    return rng.integers(0, 256, (n, c, size, size), dtype=np.uint8)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(root, fmt="python2", per_batch=2):
    """A cifar-10-batches-py folder with 5 x per_batch train and 3 test images; returns the arrays."""
    rng = np.random.default_rng(0)
    root.mkdir()
    write_pickle(root / "batches.meta", {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
                                         b"label_names": [n.encode() for n in CIFAR10_NAMES]}, fmt)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = 3 if name == "test_batch" else per_batch
        x, y = random_images(rng, n), rng.integers(0, 10, n).tolist()
        write_pickle(root / name, {b"batch_label": name.encode(), b"labels": y, b"data": cifar_rows(x),
                                   b"filenames": [f"img_{i}.png".encode() for i in range(n)]}, fmt)
        xs.append(x)
        ys.append(y)
    return xs, ys


def make_cifar100(root):
    rng = np.random.default_rng(1)
    root.mkdir()
    fine = [f"fine_{i}" for i in range(100)]
    write_pickle(root / "meta", {b"fine_label_names": [n.encode() for n in fine],
                                 b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]})
    out = {}
    for name, n in (("train", 4), ("test", 2)):
        x, y = random_images(rng, n), rng.integers(0, 100, n).tolist()
        write_pickle(root / name, {b"filenames": [b"f.png"] * n, b"batch_label": name.encode(),
                                   b"fine_labels": y, b"coarse_labels": [v // 5 for v in y],
                                   b"data": cifar_rows(x)})
        out[name] = (x, y)
    return fine, out


def solid(color, size=8, mode="RGB") -> Image.Image:
    return Image.new(mode, (size, size), color)


TINY_WNIDS = ["n02", "n01"]  # deliberately unsorted: class order is the line order
TINY_COLORS = {"n02": (200, 30, 30), "n01": (20, 40, 220)}


def make_tiny(root, words=True):
    """tiny-imagenet-200 layout: 2 classes x 2 train JPEGs (one grayscale, one 16x16), 3 val JPEGs."""
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    if words:
        (root / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\n")
    for wnid in TINY_WNIDS:
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t7\t7\n")
        solid(TINY_COLORS[wnid]).save(images / f"{wnid}_0.JPEG", format="JPEG", quality=95)
        solid(TINY_COLORS[wnid], size=16).save(images / f"{wnid}_1.JPEG", format="JPEG", quality=95)
    solid(128, mode="L").save(root / "train" / "n01" / "images" / "n01_2.JPEG", format="JPEG", quality=95)
    annotations = [("val_0.JPEG", "n01"), ("val_1.JPEG", "n02"), ("val_2.JPEG", "n01")]
    for fname, wnid in annotations:
        solid(TINY_COLORS[wnid]).save(root / "val" / "images" / fname, format="JPEG", quality=95)
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{f}\t{w}\t0\t0\t7\t7\n" for f, w in annotations))


def make_imagefolder(root, test_split="val"):
    """train/{dog,cat} and <test_split>/{dog,cat}: random PNGs (lossless) plus one JPEG and a stray .txt."""
    rng = np.random.default_rng(2)
    pixels = {}
    for split in ("train", test_split):
        for cls in ("dog", "cat"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, ext in enumerate((".png", ".PNG")):
                hwc = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                Image.fromarray(hwc).save(folder / f"{i}{ext}", format="PNG")
                pixels[split, cls, i] = hwc.transpose(2, 0, 1)
            (folder / "notes.txt").write_text("not an image")
    solid((10, 250, 90), size=8).save(root / "train" / "cat" / "2.jpg", format="JPEG", quality=95)
    return pixels


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path, suffix):
    rng = np.random.default_rng(3)
    data = {"train": (rng.integers(0, 256, (5, 4, 6), dtype=np.uint8), np.array([0, 1, 2, 1, 0], np.uint8)),
            "t10k": (rng.integers(0, 256, (2, 4, 6), dtype=np.uint8), np.array([2, 2], np.uint8))}
    for prefix, (x, y) in data.items():
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", x)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", y)
    raw = readers.read_idx(tmp_path, ["a", "b", "c"])
    assert raw.train_x.shape == (5, 1, 4, 6) and raw.train_x.dtype == np.uint8
    assert raw.train_y.dtype == np.int64 and raw.test_y.dtype == np.int64
    np.testing.assert_array_equal(raw.train_x[:, 0], data["train"][0])
    np.testing.assert_array_equal(raw.test_x[:, 0], data["t10k"][0])
    assert raw.train_y.tolist() == [0, 1, 2, 1, 0] and raw.test_y.tolist() == [2, 2]
    assert raw.classes == ["a", "b", "c"]


def write_mnist(root, n_test_labels=2, max_label=1):
    write_idx(root / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(root / "train-labels-idx1-ubyte", np.array([0, max_label, 0], np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", np.zeros((2, 2, 2), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(n_test_labels, np.uint8))


def test_read_idx_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        readers.read_idx(tmp_path / "nope", ["a", "b"])
    write_mnist(tmp_path, n_test_labels=3)
    with pytest.raises(DataError, match="do not match"):
        readers.read_idx(tmp_path, ["a", "b"])
    write_mnist(tmp_path, max_label=5)
    with pytest.raises(DataError, match="labels go up to 5"):
        readers.read_idx(tmp_path, ["a", "b"])
    write_mnist(tmp_path)
    readers.read_idx(tmp_path, ["a", "b"])  # the valid files read, so the next error is the missing file
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        readers.read_idx(tmp_path, ["a", "b"])


def test_read_idx_file_corruption(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated or corrupt"):
        readers.read_idx_file(path)
    path.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)  # 0x0D = float32, not ours
    with pytest.raises(DataError, match="bad magic"):
        readers.read_idx_file(path)
    gz = tmp_path / "x-idx3-ubyte.gz"
    write_idx(gz, np.zeros((3, 4, 4), np.uint8))
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        readers.read_idx_file(gz)
    gz.write_bytes(gzip.compress(b"x")[:10] + b"garbage" * 5)
    with pytest.raises(DataError, match="truncated or corrupt"):
        readers.read_idx_file(gz)


# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("fmt", ["python2", 2, pickle.HIGHEST_PROTOCOL])
def test_read_cifar10_roundtrip(tmp_path, fmt):
    xs, ys = make_cifar10(tmp_path / "cifar-10-batches-py", fmt)
    raw = readers.read_cifar10(tmp_path / "cifar-10-batches-py")
    assert raw.train_x.shape == (10, 3, 32, 32) and raw.train_x.dtype == np.uint8
    assert raw.test_x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(raw.train_x, np.concatenate(xs[:5]))  # batch order 1..5
    np.testing.assert_array_equal(raw.test_x, xs[5])
    assert raw.train_y.dtype == np.int64 and raw.train_y.tolist() == sum(ys[:5], [])
    assert raw.test_y.tolist() == ys[5]
    assert raw.classes == CIFAR10_NAMES


def test_read_cifar100_roundtrip(tmp_path):
    fine, data = make_cifar100(tmp_path / "cifar-100-python")
    raw = readers.read_cifar100(tmp_path / "cifar-100-python")
    np.testing.assert_array_equal(raw.train_x, data["train"][0])
    np.testing.assert_array_equal(raw.test_x, data["test"][0])
    assert raw.train_y.tolist() == data["train"][1] and raw.test_y.tolist() == data["test"][1]
    assert raw.test_y.dtype == np.int64 and raw.classes == fine


def rewrite_batch(root, name, **changes):
    obj = pickle.loads((root / name).read_bytes(), encoding="bytes")
    obj.update({k.encode(): v for k, v in changes.items()})
    write_pickle(root / name, {k: v for k, v in obj.items() if v is not None})


CIFAR_BATCH_ERRORS = {
    "short data": (dict(data=np.zeros((2, 3000), np.uint8)), r"expected uint8 \[2, 3072\]"),
    "float data": (dict(data=np.zeros((2, 3072), np.float32)), r"is float32 \[2, 3072\]"),
    "label too big": (dict(labels=[3, 10]), r"label 10 is out of range for 10 classes"),
    "negative label": (dict(labels=[-1, 0]), r"label -1 is out of range"),
    "string labels": (dict(labels=["cat", "dog"]), r"not a flat list of integer labels"),
    "no labels": (dict(labels=None), r"data_batch_2 has no b'labels' entry"),
}


@pytest.mark.parametrize("case", CIFAR_BATCH_ERRORS)
def test_read_cifar10_bad_batch(tmp_path, case):
    root = tmp_path / "c10"
    make_cifar10(root)
    changes, message = CIFAR_BATCH_ERRORS[case]
    rewrite_batch(root, "data_batch_2", **changes)
    with pytest.raises(DataError, match=message):
        readers.read_cifar10(root)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], r"cannot unpickle .*data_batch_3.*truncated or corrupt"),
    (lambda b: b"", r"cannot unpickle .*data_batch_3 \(EOFError"),
    (lambda b: b"<html>404 Not Found</html>", r"cannot unpickle .*data_batch_3"),
    (lambda b: pickle.dumps([1, 2]), r"data_batch_3 holds a list, not the dict"),
])
def test_read_cifar10_corrupt_pickle(tmp_path, damage, message):
    root = tmp_path / "c10"
    make_cifar10(root)
    (root / "data_batch_3").write_bytes(damage((root / "data_batch_3").read_bytes()))
    with pytest.raises(DataError, match=message):
        readers.read_cifar10(root)


class _Remove:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.remove, (self.path,)


def test_read_cifar10_refuses_code_in_pickle(tmp_path):
    root, sentinel = tmp_path / "c10", tmp_path / "sentinel"
    make_cifar10(root)
    sentinel.write_text("still here")
    (root / "test_batch").write_bytes(pickle.dumps({b"data": _Remove(str(sentinel))}))
    refused = r"refusing to unpickle .*test_batch: it references (posix|nt|os)\.(remove|unlink)"
    with pytest.raises(DataError, match=refused):
        readers.read_cifar10(root)
    assert sentinel.exists()


def test_read_cifar_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; .*cifar-10-batches-py.*cs\.toronto\.edu"):
        readers.read_cifar10(tmp_path / "missing")
    make_cifar10(tmp_path / "cifar-10-batches-py")
    # both layouts: the folder holding cifar-10-batches-py/ (torchvision's root) and the folder itself
    outer, inner = readers.read_cifar10(tmp_path), readers.read_cifar10(tmp_path / "cifar-10-batches-py")
    assert np.array_equal(outer.train_x, inner.train_x) and outer.classes == inner.classes
    (tmp_path / "cifar-10-batches-py" / "batches.meta").rename(tmp_path / "meta.bak")
    with pytest.raises(DataError, match=r"has no file batches\.meta; did you mean --root .*cifar-10-batches-py"):
        readers.read_cifar10(tmp_path)
    (tmp_path / "meta.bak").rename(tmp_path / "cifar-10-batches-py" / "batches.meta")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"has no file data_batch_4"):
        readers.read_cifar10(tmp_path / "cifar-10-batches-py")
    write_pickle(tmp_path / "cifar-10-batches-py" / "batches.meta", {b"label_names": []})
    with pytest.raises(DataError, match=r"not a non-empty list of class names"):
        readers.read_cifar10(tmp_path / "cifar-10-batches-py")


def test_read_cifar100_errors(tmp_path):
    root = tmp_path / "cifar-100-python"
    make_cifar100(root)
    rewrite_batch(root, "test", fine_labels=[0, 100])
    with pytest.raises(DataError, match=r"test: label 100 is out of range for 100 classes"):
        readers.read_cifar100(root)
    (root / "meta").unlink()
    with pytest.raises(DataError, match=r"has no file meta"):
        readers.read_cifar100(root)


# ----------------------------------------------------------------------------- Tiny ImageNet


def test_read_tiny_imagenet_roundtrip(tmp_path):
    make_tiny(tmp_path)
    raw = readers.read_tiny_imagenet(tmp_path, image_size=8)
    assert raw.classes == ["tabby", "goldfish"]  # wnids.txt order, first name from words.txt
    assert raw.train_x.shape == (5, 3, 8, 8) and raw.train_x.dtype == np.uint8
    assert raw.train_y.tolist() == [0, 0, 1, 1, 1] and raw.train_y.dtype == np.int64
    assert raw.test_x.shape == (3, 3, 8, 8) and raw.test_y.tolist() == [1, 0, 1]
    expected = [TINY_COLORS["n02"]] * 2 + [TINY_COLORS["n01"]] * 2 + [(128, 128, 128)]  # gray → RGB
    for image, color in zip(raw.train_x, expected):  # JPEG is lossy: solid colours within a few levels
        assert np.abs(image.astype(int) - np.array(color)[:, None, None]).max() <= 4
    val_colors = np.array([TINY_COLORS[w] for w in ("n01", "n02", "n01")])[:, :, None, None]
    assert np.abs(raw.test_x.astype(int) - val_colors).max() <= 4


def test_read_tiny_imagenet_without_words_and_resized(tmp_path):
    make_tiny(tmp_path, words=False)
    raw = readers.read_tiny_imagenet(tmp_path, image_size=4)
    assert raw.classes == TINY_WNIDS
    assert raw.train_x.shape == (5, 3, 4, 4) and raw.test_x.shape == (3, 3, 4, 4)


def _unknown_wnid(root):
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn99\t0\t0\t7\t7\n")


def _missing_val_image(root):
    (root / "val" / "images" / "val_1.JPEG").unlink()


def _corrupt_jpeg(root):
    path = root / "train" / "n01" / "images" / "n01_1.JPEG"
    path.write_bytes(path.read_bytes()[:40])


def _empty_class(root):
    for p in (root / "train" / "n02" / "images").iterdir():
        p.unlink()


def _bad_line(root):
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG n01 0 0 7 7\n")


TINY_ERRORS = {
    "no wnids": (lambda r: (r / "wnids.txt").unlink(), r"has no file wnids\.txt"),
    "empty wnids": (lambda r: (r / "wnids.txt").write_text("\n"), r"no classes found: .*wnids\.txt is empty"),
    "no train folder": (lambda r: (r / "wnids.txt").write_text("n02\nn01\nn07\n"),
                        r"wnids\.txt lists class n07 but .*train/n07/images does not exist"),
    "empty class": (_empty_class, r"class folder .*n02/images holds no images"),
    "no annotations": (lambda r: (r / "val" / "val_annotations.txt").unlink(), r"has no file val_annotations\.txt"),
    "unknown wnid": (_unknown_wnid, r"line 4 names class n99, which wnids\.txt does not list"),
    "missing val image": (_missing_val_image, r"line 2 names .*val_1\.JPEG, which does not exist"),
    "bad line": (_bad_line, r"line 4 is not 'filename<TAB>wnid<TAB>bbox'"),
    "corrupt jpeg": (_corrupt_jpeg, r"cannot read image .*n01_1\.JPEG"),
}


@pytest.mark.parametrize("case", TINY_ERRORS)
def test_read_tiny_imagenet_errors(tmp_path, case):
    make_tiny(tmp_path)
    damage, message = TINY_ERRORS[case]
    damage(tmp_path)
    with pytest.raises(DataError, match=message):
        readers.read_tiny_imagenet(tmp_path, image_size=8)


def test_read_tiny_imagenet_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; .*tiny-imagenet-200"):
        readers.read_tiny_imagenet(tmp_path / "missing")
    make_tiny(tmp_path / "tiny-imagenet-200")
    outer = readers.read_tiny_imagenet(tmp_path, image_size=8)  # the folder holding tiny-imagenet-200/
    assert np.array_equal(outer.train_x, readers.read_tiny_imagenet(tmp_path / "tiny-imagenet-200", image_size=8).train_x)
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").rename(tmp_path / "wnids.bak")
    with pytest.raises(DataError, match=r"did you mean --root .*tiny-imagenet-200"):
        readers.read_tiny_imagenet(tmp_path)
    (tmp_path / "wnids.bak").rename(tmp_path / "tiny-imagenet-200" / "wnids.txt")
    with pytest.raises(DataError, match=r"image_size must be a positive integer"):
        readers.read_tiny_imagenet(tmp_path / "tiny-imagenet-200", image_size=0)


# ----------------------------------------------------------------------------- image folders


@pytest.mark.parametrize("test_split", ["val", "test"])
def test_read_imagefolder_roundtrip(tmp_path, test_split):
    pixels = make_imagefolder(tmp_path, test_split)
    raw = readers.read_imagefolder(tmp_path, image_size=4)
    assert raw.classes == ["cat", "dog"]  # sorted folder names
    assert raw.train_x.shape == (5, 3, 4, 4) and raw.train_x.dtype == np.uint8  # .txt ignored
    assert raw.train_y.tolist() == [0, 0, 0, 1, 1] and raw.train_y.dtype == np.int64
    assert raw.test_y.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(raw.train_x[0], pixels["train", "cat", 0])  # 0.png: lossless
    np.testing.assert_array_equal(raw.train_x[1], pixels["train", "cat", 1])  # 1.PNG: extension case
    np.testing.assert_array_equal(raw.train_x[3], pixels["train", "dog", 0])
    np.testing.assert_array_equal(raw.test_x[3], pixels[test_split, "dog", 1])
    # 2.jpg was 8x8 and is resized to 4x4; a solid colour stays solid
    assert np.abs(raw.train_x[2].astype(int) - np.array([10, 250, 90])[:, None, None]).max() <= 4


def test_read_imagefolder_grayscale(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        solid((200, 100, 50), size=6).save(tmp_path / split / "a" / "x.bmp")
        solid((0, 0, 255), size=6).save(tmp_path / split / "a" / "y.webp", lossless=True)
    raw = readers.read_imagefolder(tmp_path, image_size=3, channels=1)
    assert raw.train_x.shape == (2, 1, 3, 3) and raw.test_x.shape == (2, 1, 3, 3)
    luma = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in ((200, 100, 50), (0, 0, 255))]  # ITU-R 601
    assert np.abs(raw.train_x[:, 0].astype(int) - np.array(luma)[:, None, None]).max() <= 1
    assert raw.classes == ["a"]


def _mismatched_classes(root):
    (root / "val" / "dog").rename(root / "val" / "bird")


def _unreadable(root):
    (root / "val" / "cat" / "0.png").write_bytes(b"\x89PNG not really")


def _empty_class_folder(root):
    (root / "train" / "fox").mkdir()
    (root / "val" / "fox").mkdir()
    (root / "val" / "fox" / "readme.txt").write_text("no images")


IMAGEFOLDER_ERRORS = {
    "no train": (lambda r: (r / "train").rename(r / "training"), r"has no train/ folder"),
    "no val": (lambda r: (r / "val").rename(r / "validation"), r"has no val/ or test/ folder"),
    "no classes": (lambda r: [(r / "train" / c).rename(r / c) for c in ("cat", "dog")],
                   r"no classes found in .*train; expected one sub-folder of images per class"),
    "class mismatch": (_mismatched_classes, r"val differ from .*train: it lacks dog, has extra bird"),
    "unreadable image": (_unreadable, r"cannot read image .*val/cat/0\.png"),
    "empty class folder": (_empty_class_folder, r"class folder .*train/fox holds no images"),
}


@pytest.mark.parametrize("case", IMAGEFOLDER_ERRORS)
def test_read_imagefolder_errors(tmp_path, case):
    make_imagefolder(tmp_path)
    damage, message = IMAGEFOLDER_ERRORS[case]
    damage(tmp_path)
    with pytest.raises(DataError, match=message):
        readers.read_imagefolder(tmp_path, image_size=4)


def test_read_imagefolder_bad_options(tmp_path):
    with pytest.raises(DataError, match=r"does not exist"):
        readers.read_imagefolder(tmp_path / "missing")
    make_imagefolder(tmp_path)
    with pytest.raises(DataError, match=r"channels must be 1 \(grayscale\) or 3 \(RGB\), got 2"):
        readers.read_imagefolder(tmp_path, channels=2)
    with pytest.raises(DataError, match=r"image_size must be a positive integer \(pixels\), got -4"):
        readers.read_imagefolder(tmp_path, image_size=-4)


# ----------------------------------------------------------------------------- the image decoder


def test_decode_image_exact_size_and_mode_is_lossless(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)  # [H, W, C]
    Image.fromarray(pixels).save(tmp_path / "a.png")
    for resize in (True, False):
        got = decode_image(tmp_path / "a.png", 3, (5, 7), resize=resize)
        assert got.dtype == np.uint8 and got.flags.writeable
        np.testing.assert_array_equal(got, pixels.transpose(2, 0, 1))


def test_decode_image_resizes_only_when_allowed(tmp_path):
    solid((200, 100, 50), size=8).save(tmp_path / "a.png")
    got = decode_image(tmp_path / "a.png", 1, (4, 6), resize=True)  # RGB 8x8 -> L 4 high, 6 wide
    assert got.shape == (1, 4, 6) and abs(int(got.mean()) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1
    with pytest.raises(DataError, match=r"a\.png is RGB 8x8 \(WxH\), the dataset needs L 6x4; .*resize enabled"):
        decode_image(tmp_path / "a.png", 1, (4, 6), resize=False)
    with pytest.raises(DataError, match=r"the dataset needs L 8x8"):  # mode alone differs
        decode_image(tmp_path / "a.png", 1, (8, 8), resize=False)


def test_decode_image_truncated_file(tmp_path):
    buf = io.BytesIO()
    solid((1, 2, 3), size=16).save(buf, format="PNG")
    (tmp_path / "t.png").write_bytes(buf.getvalue()[:-30])
    for resize in (True, False):
        with pytest.raises(DataError, match=r"cannot read image .*t\.png .*replace or delete the file"):
            decode_image(tmp_path / "t.png", 3, (16, 16), resize=resize)


def test_image_files_lists_visible_images_sorted(tmp_path):
    for name in ("b.PNG", "a.tif", "c.pgm", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in image_files(tmp_path)] == ["a.tif", "b.PNG", "c.pgm"]


@pytest.mark.parametrize("name, folder, make", [("cifar10", "cifar-10-batches-py", "make_cifar10"),
                                                ("cifar100", "cifar-100-python", "make_cifar100")])
def test_cifar_loads_from_either_layout_with_the_published_teachers_constants(tmp_path, name, folder, make):
    """CIFAR-10 and -100 use the constants the field's published CIFAR teachers were trained
    with (mean 0.4914/0.4822/0.4465, std 0.2023/0.1994/0.2010), from the outer or inner folder."""
    from ccfs.data.cache import load_dataset

    globals()[make](tmp_path / folder)
    for root in (tmp_path, tmp_path / folder):
        d = load_dataset(name, str(root))
        assert d.mean == (0.4914, 0.4822, 0.4465) and d.std == (0.2023, 0.1994, 0.2010)
