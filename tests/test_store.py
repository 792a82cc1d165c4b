"""The store (`ccfs prepare --store`, `data.store=`): same rows as the tensor cache, read a
batch of rows at a time (never memory-mapped), written atomically, refused when damaged."""
from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ccfs.cli import main
from ccfs.config import Recipe, load_config
from ccfs.context import Run
from ccfs.data import readers
from ccfs.data import store as store_mod
from ccfs.data.cache import ChannelStats, load_dataset
from ccfs.data.datasets import RowsTo, Split, carve_validation
from ccfs.data.store import StoreRows, open_store, prepare_store
from ccfs.errors import DataError
from ccfs.train import fit, predict_logits
from conftest import write_fake_fmnist
from test_readers import make_tiny

STORE_FILES = {"meta.json", "train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"}


def prepare(*args) -> int:
    return main(["prepare", *map(str, args)])


def assert_same_data(got, want) -> None:
    for split in ("train", "test"):
        g, w = getattr(got, split), getattr(want, split)
        assert g.images.dtype == torch.uint8 and torch.equal(g.images[:], w.images), split
        assert torch.equal(g.labels, w.labels), split
    assert got.classes == want.classes and got.name == want.name
    assert got.mean == pytest.approx(want.mean) and got.std == pytest.approx(want.std)


def mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def make_image_tree(root: Path) -> None:
    """An ImageNet-style tree: train/<wnid>/*.JPEG|png and val/<wnid>/*, 3 classes of
    uneven size, one grayscale and one 12x12 image (converted and resized)."""
    rng = np.random.default_rng(5)
    for split, sizes in (("train", (5, 3, 4)), ("val", (2, 1, 2))):
        for c, n in enumerate(sizes):
            folder = root / split / f"n0{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                hwc = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(hwc).save(folder / f"n0{c}_{i}.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(root / "train" / "n01" / "gray.png")
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "train" / "n02" / "big.JPEG")


# ----------------------------------------------------------------------------- prepare


def test_fmnist_store_holds_the_cached_rows_read_on_demand(fake_fmnist, tmp_path, capsys):
    store = tmp_path / "store"
    assert prepare("--dataset", "fashion-mnist", "--root", fake_fmnist, "--store", store) == 0
    assert "120 train / 40 test" in capsys.readouterr().out
    assert {p.name for p in store.iterdir()} == STORE_FILES
    meta = json.loads((store / "meta.json").read_text())
    assert (meta["dataset"], meta["train"], meta["test"], meta["image_size"], meta["channels"]) == \
        ("fashion-mnist", 120, 40, 28, 1)
    assert meta["mean"] == [0.2861] and meta["version"] == store_mod.FORMAT_VERSION
    assert np.load(store / "train_images.npy").shape == (120, 1, 28, 28)
    data = open_store(store)
    assert_same_data(data, load_dataset("fashion-mnist", str(fake_fmnist)))
    assert data.train.mapped and data.test.mapped
    assert isinstance(data.train.images, StoreRows)
    assert str(store / "train_images.npy") not in mapped_files()  # read with preadv: no page counts in RSS
    assert not data.train.subset([3, 1]).mapped  # a subset is an in-memory copy of its rows


def test_image_tree_store_streams_in_batches_and_matches_the_reader(tmp_path, monkeypatch):
    make_image_tree(tmp_path / "tree")
    monkeypatch.setattr(store_mod, "BATCH_BYTES", 3 * 3 * 8 * 8)  # 3 images per batch: batches split classes
    decoded = []
    real = readers._load_images
    monkeypatch.setattr(readers, "_load_images", lambda paths, *a: decoded.append(len(paths)) or real(paths, *a))
    data = prepare_store("imagefolder", tmp_path / "tree", tmp_path / "store", image_size=8)
    assert decoded == [3, 2, 3, 1, 3, 2, 2, 1, 2]  # class folder by class folder, 3 images at most
    want = load_dataset("imagefolder", str(tmp_path / "tree"), image_size=8)
    assert_same_data(data, want)
    assert data.train.labels.tolist() == [0] * 5 + [1] * 4 + [2] * 5
    x = data.train.images[:].double() / 255  # an independent reference for the streamed statistics
    assert data.mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert data.std == pytest.approx(x.std((0, 2, 3)).tolist(), abs=1e-12)


def test_tiny_imagenet_store_matches_the_reader(tmp_path):
    make_tiny(tmp_path / "tiny")
    data = prepare_store("tiny-imagenet", tmp_path / "tiny", tmp_path / "store", image_size=8)
    assert_same_data(data, load_dataset("tiny-imagenet", str(tmp_path / "tiny"), image_size=8))


def test_channel_stats_match_torch():
    x = np.random.default_rng(0).integers(0, 256, (7, 3, 5, 4), dtype=np.uint8)
    stats = ChannelStats(3)
    stats.add(x[:2])
    stats.add(x[2:])
    xf = torch.from_numpy(x).double() / 255
    mean, std = stats.result()
    assert mean == pytest.approx(xf.mean((0, 2, 3)).tolist()) and std == pytest.approx(xf.std((0, 2, 3)).tolist())


def test_array_datasets_take_no_size_option(fake_fmnist, tmp_path, capsys):
    assert prepare("--dataset", "fashion-mnist", "--root", fake_fmnist, "--store", tmp_path / "s",
                   "--image-size", "32") == 2
    assert "imagefolder and tiny-imagenet only" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- atomic writes


def test_interrupted_prepare_leaves_no_store(tmp_path, monkeypatch):
    make_image_tree(tmp_path / "tree")
    real = store_mod._NpyRows.write

    def write(self, start, rows):
        if self.path.name == "test_images.npy":
            raise KeyboardInterrupt  # as if stopped halfway through
        real(self, start, rows)

    monkeypatch.setattr(store_mod._NpyRows, "write", write)
    with pytest.raises(KeyboardInterrupt):
        prepare_store("imagefolder", tmp_path / "tree", tmp_path / "store", image_size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]  # no store, no hidden temporary folder


def test_interrupted_prepare_keeps_the_old_store(fake_fmnist, tmp_path, monkeypatch):
    store = tmp_path / "store"
    prepare_store("fashion-mnist", fake_fmnist, store)
    monkeypatch.setattr(store_mod, "write_json", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        prepare_store("fashion-mnist", fake_fmnist, store)
    assert_same_data(open_store(store), load_dataset("fashion-mnist", str(fake_fmnist)))


# ----------------------------------------------------------------------------- damaged stores


def _drop_meta(store: Path):
    (store / "meta.json").unlink()


def _fewer_labels(store: Path):
    np.save(store / "train_labels.npy", np.zeros(100, np.int64))


def _truncated_images(store: Path):
    path = store / "test_images.npy"
    path.write_bytes(path.read_bytes()[:1000])


def _old_version(store: Path):
    meta = json.loads((store / "meta.json").read_text())
    (store / "meta.json").write_text(json.dumps({**meta, "version": 0}))


def _bad_label(store: Path):
    y = np.load(store / "test_labels.npy")
    y[0] = 10
    np.save(store / "test_labels.npy", y)


@pytest.mark.parametrize("damage, message", [(_drop_meta, "no meta.json"), (_fewer_labels, "meta.json says"),
                                             (_truncated_images, "cannot read"), (_old_version, "format version"),
                                             (_bad_label, "labels outside")])
def test_damaged_store_is_a_one_line_error(fake_fmnist, tmp_path, capsys, damage, message):
    store = tmp_path / "store"
    prepare_store("fashion-mnist", fake_fmnist, store)
    damage(store)
    with pytest.raises(DataError, match=message) as e:
        open_store(store)
    assert "re-run `ccfs prepare" in str(e.value) and "\n" not in str(e.value)
    assert main(["teacher", "tiny", f"data.store={store}", f"out={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_store_of_another_dataset_is_refused(fake_fmnist, tmp_path):
    prepare_store("fashion-mnist", fake_fmnist, tmp_path / "store")
    with pytest.raises(DataError, match="data.name=mnist"):
        Run(load_config("tiny", [f"data.store={tmp_path / 'store'}", "data.name=mnist"])).data


# ----------------------------------------------------------------------------- reading


def test_run_data_reads_the_store(fake_fmnist, tmp_path):
    prepare_store("fashion-mnist", fake_fmnist, tmp_path / "store")
    data = Run(load_config("tiny", [f"data.store={tmp_path / 'store'}", f"out={tmp_path / 'run'}"])).data
    assert data.train.mapped
    assert_same_data(data, Run(load_config("tiny", [f"data.root={fake_fmnist}"])).data)


def test_batches_on_another_device_gathers_rows_where_they_are():
    split = Split(torch.arange(24, dtype=torch.uint8).view(6, 1, 2, 2), torch.arange(6), mapped=True)
    assert split.batches_on("cpu") is split  # nothing moves on the host
    moved = split.batches_on("meta")  # stands in for a GPU
    assert isinstance(moved.images, RowsTo) and moved.labels.device.type == "meta" and moved.mapped
    batch = moved.images[torch.tensor([4, 1])]
    assert batch.device.type == "meta" and batch.shape == (2, 1, 2, 2) and len(moved) == 6


def test_run_from_the_store_selects_what_the_in_memory_run_selects(tmp_path):
    root = write_fake_fmnist(tmp_path / "fmnist")
    prepare_store("fashion-mnist", root, tmp_path / "store")
    quick = ["select.method=[ccfs]", "distill.iterations=2", "train.epochs=2"]
    outs = {"memory": tmp_path / "memory", "store": tmp_path / "from-store"}
    assert main(["run", "tiny", f"data.root={root}", f"out={outs['memory']}", *quick]) == 0
    assert main(["run", "tiny", f"data.store={tmp_path / 'store'}", f"out={outs['store']}", *quick]) == 0
    read = {k: (json.loads((o / "select" / "ccfs" / "seed0" / "selected_indices.json").read_text()),
                json.loads((o / "teacher" / "metrics.json").read_text())) for k, o in outs.items()}
    assert read["store"][0]["idx_selected"] == read["memory"][0]["idx_selected"]
    assert read["store"][1]["test_acc"] == read["memory"][1]["test_acc"]
    assert read["store"][1]["train_acc"] == read["memory"][1]["train_acc"]


def test_store_rows_read_exactly_the_rows_asked_for(fake_fmnist, tmp_path):
    prepare_store("fashion-mnist", fake_fmnist, tmp_path / "store")
    rows, want = open_store(tmp_path / "store").train.images, load_dataset("fashion-mnist", str(fake_fmnist)).train.images
    assert (rows.shape, len(rows), rows.dtype, rows.device) == (want.shape, 120, torch.uint8, torch.device("cpu"))
    idx = torch.tensor([7, 3, 4, 5, 3, 119, 0, 6, 7, 7, -1])  # unsorted, runs, repeats, a negative index
    for index in (idx, idx.tolist(), idx.numpy(), slice(10, 50), slice(None), slice(5, 5), slice(0, 120, 7),
                  torch.tensor([], dtype=torch.long), [], torch.arange(120) % 3 == 0):
        got = rows[index]
        assert got.dtype == torch.uint8 and torch.equal(got, want[index]), index
    assert torch.equal(rows[42], want[42]) and torch.equal(rows[torch.tensor(42)], want[42])
    assert np.array_equal(rows.numpy()[np.int64(9)], want[9].numpy())  # what report plots index
    assert torch.equal(rows.head(30)[torch.tensor([29, 0])], want[[29, 0]]) and len(rows.head(500)) == 120
    assert torch.equal(pickle.loads(pickle.dumps(rows))[idx], want[idx])
    assert rows.to("cpu") is rows and rows.to("meta").shape == want.shape
    with pytest.raises(IndexError, match="out of range"):
        rows[torch.tensor([0, 120])]


def test_training_and_inference_from_a_store_match_in_memory(fake_fmnist, tmp_path):
    """One fit epoch (random batches of the store) and predict_logits (whole, and on chosen
    rows a batch at a time) give exactly the in-memory results."""
    from ccfs.models import create_model
    from ccfs.objectives import CrossEntropy

    prepare_store("fashion-mnist", fake_fmnist, tmp_path / "store")
    stored, memory = open_store(tmp_path / "store"), load_dataset("fashion-mnist", str(fake_fmnist))
    assert stored.train.mapped and not stored.train.subset([5, 2]).mapped
    assert torch.equal(stored.train.subset([5, 2, 5]).images, memory.train.subset([5, 2, 5]).images)
    recipe = Recipe(epochs=1, batch_size=32, lr=0.05, augment="crop", crop_pad=2, flip=True, amp=False)
    nets = {}
    for name, data in (("store", stored), ("memory", memory)):
        torch.manual_seed(0)
        nets[name] = create_model("convnet_w32_bn", 10, 1, 28)
        fit(nets[name], data.train, recipe, CrossEntropy(), mean=data.mean, std=data.std, seed=3, progress=False)
    for k, v in nets["memory"].state_dict().items():
        assert torch.equal(nets["store"].state_dict()[k], v), k
    rows = torch.tensor([90, 3, 17, 4, 3, 100, 55])
    for kw in ({}, {"rows": rows}):
        got, want = (predict_logits(nets["memory"], d.train.images, d.mean, d.std, batch_size=4, **kw)
                     for d in (stored, memory))
        assert torch.equal(got, want)
    assert torch.equal(predict_logits(nets["memory"], memory.train.images, memory.mean, memory.std, rows=rows),
                       predict_logits(nets["memory"], memory.train.images[rows], memory.mean, memory.std))
    moved = stored.train.batches_on("meta")  # a store on the host feeding a device: rows gathered on the host
    assert isinstance(moved.images, RowsTo) and moved.images[rows].device.type == "meta"



# ----------------------------------------------------------------------------- validation splits of a store


def counting_reads(monkeypatch) -> list[int]:
    """Every read `StoreRows` makes from now on (rows per read), recorded."""
    reads, real = [], StoreRows._read_into
    monkeypatch.setattr(StoreRows, "_read_into", lambda self, first, out: reads.append(len(out)) or real(self, first, out))
    return reads


def test_a_view_reads_the_rows_of_its_map(fake_fmnist, tmp_path, monkeypatch):
    """`StoreRows.take`: row i of the view is the store's row map[i], however it is read;
    taking reads nothing, a view of a view composes, and a pickled view keeps its map."""
    prepare_store("fashion-mnist", fake_fmnist, tmp_path / "store")
    rows, whole = open_store(tmp_path / "store").train.images, load_dataset("fashion-mnist", str(fake_fmnist)).train.images
    row_map = torch.tensor([100, 3, 4, 5, 6, 119, 0, 50, 51, 52, 7, 7])  # unsorted, runs, a repeat
    reads = counting_reads(monkeypatch)
    view = rows.take(row_map)
    inner = view.take(torch.tensor([9, 0, 11]))  # a view of a view: the store's rows 52, 100, 7
    heads = (view.head(4), view.head(50))
    assert reads == []  # nothing read up front
    want = whole[row_map]
    assert (view.shape, len(view), view.dtype, view.device) == (want.shape, 12, torch.uint8, torch.device("cpu"))
    idx = torch.tensor([7, 3, 4, 11, 3, 0, -1])
    for index in (idx, idx.tolist(), idx.numpy(), slice(2, 9), slice(None), slice(4, 4), slice(1, 12, 3),
                  torch.tensor([], dtype=torch.long), [], torch.arange(12) % 3 == 0):
        got = view[index]
        assert got.dtype == torch.uint8 and torch.equal(got, want[index]), index
    assert torch.equal(view[5], want[5]) and torch.equal(view[torch.tensor(5)], want[5])
    assert np.array_equal(view.numpy()[np.int64(2)], want[2].numpy()) and view.numpy().shape == tuple(want.shape)
    assert torch.equal(inner.row_map, torch.tensor([52, 100, 7])) and torch.equal(inner[:], whole[[52, 100, 7]])
    assert torch.equal(heads[0][:], want[:4]) and len(heads[1]) == 12
    assert view.to("cpu") is view and view.to("meta").shape == want.shape
    copy = pickle.loads(pickle.dumps(view))  # another process's copy: the file opened again, the map kept
    assert torch.equal(copy.row_map, row_map) and copy.shape == view.shape and torch.equal(copy[idx], want[idx])
    assert torch.equal(rows.take(slice(10, 20))[:], whole[10:20])
    with pytest.raises(IndexError, match="out of range"):
        view[torch.tensor([12])]
    with pytest.raises(IndexError, match="out of range"):
        rows.take([120])


def test_carve_validation_of_a_store_matches_in_memory_and_reads_nothing(fake_fmnist, tmp_path, monkeypatch):
    prepare_store("fashion-mnist", fake_fmnist, tmp_path / "store")
    stored, memory = open_store(tmp_path / "store"), load_dataset("fashion-mnist", str(fake_fmnist))
    reads = counting_reads(monkeypatch)
    got, want = carve_validation(stored, 20), carve_validation(memory, 20)
    assert reads == []  # the rows are chosen from the labels; the views read when indexed
    assert torch.equal(got.train_rows, want.train_rows) and torch.equal(got.val_rows, want.val_rows)
    for split in ("train", "val"):
        g, w = getattr(got, split), getattr(want, split)
        assert g.mapped and isinstance(g.images, StoreRows) and not w.mapped, split
        assert torch.equal(g.images.row_map, getattr(got, f"{split}_rows")), split
        assert torch.equal(g.labels, w.labels) and torch.equal(g.images[:], w.images), split
    assert got.summary() == want.summary() and got.file_train_size == 120
    assert torch.equal(got.file_train_labels, stored.train.labels)
    assert torch.equal(got.val.subset([3, 0]).images, want.val.images[[3, 0]])  # a subset is still a copy
    assert not got.val.subset([3, 0]).mapped


VAL_RUN = ["data.val_size=20", "select.method=[ccfs,random]", "distill.iterations=2", "train.epochs=2",
           "threads=1", "device=cpu"]


def accuracies(out: Path) -> dict:
    """The selections, the teacher's accuracies and every record's, of a run directory."""
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    teacher = json.loads((out / "teacher" / "metrics.json").read_text())
    return {"selected": {m: json.loads((out / "select" / m / "seed0" / "selected_indices.json").read_text())
                         for m in ("ccfs", "random")},
            "teacher": (teacher["test_acc"], teacher["val_acc"], teacher["train_acc"]),
            "records": sorted((r["method"], r["model"], r["seed"], r["final_acc"], r["val_acc"]) for r in recs)}


@pytest.fixture(scope="module")
def val_runs(tmp_path_factory):
    """`ccfs run tiny` with a validation split, from memory and from a store (one process each)."""
    base = tmp_path_factory.mktemp("val-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CCFS_CACHE", str(base / "cache"))
        root = write_fake_fmnist(base / "fmnist")
        prepare_store("fashion-mnist", root, base / "store")
        outs = {"memory": base / "memory", "store": base / "from-store"}
        assert main(["run", "tiny", f"data.root={root}", f"out={outs['memory']}", *VAL_RUN]) == 0
        assert main(["run", "tiny", f"data.store={base / 'store'}", f"out={outs['store']}", *VAL_RUN]) == 0
    return base, outs


def test_run_from_a_store_with_a_validation_split_matches_in_memory(val_runs):
    _, outs = val_runs
    got, want = accuracies(outs["store"]), accuracies(outs["memory"])
    assert got == want
    assert all(r[4] is not None for r in got["records"]) and got["teacher"][1] is not None  # validation was used
    held_out = set(np.load(outs["store"] / "teacher" / "train_rows.npy").tolist()) ^ set(range(120))
    assert len(held_out) == 20
    for sel in got["selected"].values():  # file rows, none of them held out
        assert sel["idx_selected"] and not held_out & set(sel["idx_selected"])


def test_two_rank_run_from_a_store_with_a_validation_split_selects_the_same(val_runs):
    """torchrun, 2 ranks on the CPU, each reading the store's views: with the one-process
    run's teacher and distilled images (a 2-rank teacher's BatchNorm differs, see
    test_distributed), the selections and the students are the one-process run's."""
    from test_distributed import run as launch  # its retry of a flaky launch

    base, outs = val_runs
    one, two = outs["store"], base / "two-ranks"
    two.mkdir()
    for part in ("teacher", "distill", "config.yaml", "format.json"):
        (shutil.copytree if (one / part).is_dir() else shutil.copy)(one / part, two / part)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ccfs",
           "run", "tiny", f"data.store={base / 'store'}", f"out={two}", *VAL_RUN]
    p = launch(cmd, base / "cache")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "distributed: 2 ranks, gloo" in p.stdout.splitlines()[:3]
    got, want = accuracies(two), accuracies(one)
    assert got["selected"] == want["selected"] and got["records"] == want["records"]
