"""Datasets larger than memory: an image folder prepared into a memory-mapped store, then a
teacher epoch and a coarse pass read from it, against the in-memory tensor path.

    python bench/store.py --threads 2 --work /tmp/ccfs-store-bench

1. generate (once; kept in WORK/tree): CLASSES x PER_CLASS train PNGs and 50 val PNGs per
   class at 64 px: a class-coloured sine grating (orientation and frequency by class) with a
   random phase and pixel noise per image, written by THREADS worker processes.
2. each phase runs in its own process, so every peak is its own:
   prepare: `ccfs prepare --dataset imagefolder --image-size 64 --store WORK/store`;
   teacher: `fit`, one epoch (or --steps steps) of convnet_w32_bn, CE, batch 256, crop + flip;
   coarse: `predict_logits` over the train rows (batch 1024);
   reads: the loop's data path alone (gather 256 random rows, to float), one epoch;
   each once over the whole store and, for the ratio, --repeats times alternately over the
   first --subset rows (the teacher for --ratio-steps steps) from the store (`StoreRows.head`:
   rows read per batch) and in memory (the same rows read into a tensor); medians are shown.
   memory-prepare: `load_dataset` of the whole folder into the tensor cache, for contrast.
Each phase's result is kept in WORK/results and reused (--fresh measures again).
Store phases run after the store files were read once (in the page cache). Peak RSS is
VmHWM. Store reads use `os.preadv` into a batch buffer, not a memory map, so the page cache
they read through is not the process's and stays out of RSS (it did count, as RssFile,
while the store was memory-mapped); peak anon is the sampled peak of RssAnon (memory only
the process holds), peak file the sampled peak of RssFile (now the mapped libraries).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

SIZE = 64  # px
VAL_PER_CLASS = 50
MB = 1 << 20


# ----------------------------------------------------------------------------- dataset

def _class_images(job) -> int:
    """Write the train and val PNGs of one class; returns how many."""
    from PIL import Image

    root, c, per_class = job
    rng = np.random.default_rng(c)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    angle, freq = np.pi * (c % 10) / 10, 2 + (c // 10) % 10  # 100 distinct gratings
    colour = np.random.default_rng(1000 + c).uniform(60, 195, 3)[:, None, None]
    for split, n in (("train", per_class), ("val", VAL_PER_CLASS)):
        folder = Path(root) / split / f"c{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
            img = colour + 50 * wave[None] + rng.normal(0, 18, (3, SIZE, SIZE))  # [3, H, W]
            hwc = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)
            Image.fromarray(hwc).save(folder / f"{i:05d}.png", compress_level=1)
    return per_class + VAL_PER_CLASS


def generate(tree: Path, classes: int, per_class: int, workers: int) -> float:
    done = tree / "done.json"
    want = {"classes": classes, "per_class": per_class, "val_per_class": VAL_PER_CLASS, "size": SIZE}
    if done.is_file() and json.loads(done.read_text()) == want:
        return 0.0
    shutil.rmtree(tree, ignore_errors=True)
    t0 = time.perf_counter()
    with Pool(workers) as pool:
        pool.map(_class_images, [(str(tree), c, per_class) for c in range(classes)])
    done.write_text(json.dumps(want))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- memory sampling

def _kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class PeakSampler:
    """The peak RssAnon and RssFile of this process, sampled every 10 ms in a thread."""

    def __init__(self):
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self):
        self.anon, self.file = max(self.anon, _kb("RssAnon")), max(self.file, _kb("RssFile"))

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.01)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample()
        return {"hwm_mb": _kb("VmHWM") / 1024, "anon_mb": self.anon / 1024, "file_mb": self.file / 1024}


# ----------------------------------------------------------------------------- phases (own process)

def _rows_in_memory(path: Path, n: int) -> np.ndarray:
    """The first n rows of an .npy file read into memory (no memory map)."""
    header = np.load(path, mmap_mode="r")  # header only: no page of the data is touched
    shape, dtype, offset = header.shape, header.dtype, header.offset
    del header
    return np.fromfile(path, dtype=dtype, count=n * int(np.prod(shape[1:])), offset=offset).reshape(n, *shape[1:])


def _train_split(store: Path, source: str, n: int):
    import torch

    from ccfs.data.datasets import Split
    from ccfs.data.store import open_store

    data = open_store(store)
    n = n or len(data.train)
    if source == "memory":
        images = torch.from_numpy(_rows_in_memory(store / "train_images.npy", n))
        return data, Split(images, data.train.labels[:n].clone())
    return data, Split(data.train.images.head(n), data.train.labels[:n], mapped=True)


class _Enough(Exception):
    pass


def _phase_teacher(args, data, split) -> tuple[int, float]:
    from ccfs.config import Recipe
    from ccfs.models import create_model
    from ccfs.objectives import CrossEntropy
    from ccfs.train import fit

    import torch

    torch.manual_seed(0)
    model = create_model("convnet_w32_bn", data.num_classes, data.channels, data.image_size)
    recipe = Recipe(epochs=1, batch_size=256, lr=0.05, augment="crop", crop_pad=4, flip=True)
    ce, calls = CrossEntropy(), [0]

    def objective(model, x, y):
        if args.steps and calls[0] == args.steps:
            raise _Enough
        calls[0] += 1
        return ce(model, x, y)

    t0 = time.perf_counter()
    try:
        hist = fit(model, split, recipe, objective, mean=data.mean, std=data.std, progress=False)
        return len(split), hist.seconds
    except _Enough:
        return args.steps * 256, time.perf_counter() - t0


def _phase_coarse(args, data, split) -> tuple[int, float]:
    import torch

    from ccfs.models import create_model
    from ccfs.train import predict_logits

    torch.manual_seed(0)
    model = create_model("convnet_w32_bn", data.num_classes, data.channels, data.image_size)
    t0 = time.perf_counter()
    predict_logits(model, split.images, data.mean, data.std, device="cpu")
    return len(split), time.perf_counter() - t0


def _phase_reads(args, data, split) -> tuple[int, float]:
    import torch

    from ccfs.data.augment import to_float
    from ccfs.train import batch_indices

    t0 = time.perf_counter()
    for idx in batch_indices(len(split), 256, torch.Generator().manual_seed(0)):
        to_float(split.images[idx])
    return len(split), time.perf_counter() - t0


def run_phase(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    sampler = PeakSampler()
    if args.phase == "prepare":
        from ccfs.cli import main

        t0 = time.perf_counter()
        assert main(["prepare", "--dataset", "imagefolder", "--root", str(args.work / "tree"), "--image-size",
                     str(SIZE), "--channels", "3", "--store", str(args.work / "store")]) == 0
        seconds, images = time.perf_counter() - t0, None
    elif args.phase == "memory-prepare":
        from ccfs.data.cache import load_dataset

        os.environ["CCFS_CACHE"] = str(args.work / "cache")
        t0 = time.perf_counter()
        load_dataset("imagefolder", str(args.work / "tree"), image_size=SIZE, channels=3)
        seconds, images = time.perf_counter() - t0, None
    else:
        data, split = _train_split(args.work / "store", args.source, args.rows)
        fn = {"teacher": _phase_teacher, "coarse": _phase_coarse, "reads": _phase_reads}[args.phase]
        images, seconds = fn(args, data, split)
    return {"images": images, "seconds": seconds, **sampler.stop()}


# ----------------------------------------------------------------------------- driver

def _spawn(args, phase: str, source: str = "store", rows: int = 0, steps: int = 0, rep: int = 0) -> dict:
    """Run one phase in its own process; its result is kept in WORK/results (rerun: --fresh)."""
    saved = args.work / "results" / f"{phase}-{source}-{rows}-{steps}-{rep}.json"
    if saved.is_file() and not args.fresh:
        return json.loads(saved.read_text())
    if source == "store" and phase not in ("prepare", "memory-prepare"):
        _warm(args.work / "store")
    cmd = [sys.executable, __file__, "--phase", phase, "--source", source, "--rows", str(rows),
           "--threads", str(args.threads), "--work", str(args.work), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{out.stderr}")
    result = {**json.loads(out.stdout.strip().splitlines()[-1]), "load": os.getloadavg()[0]}
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps(result))
    return result


def _warm(store: Path) -> None:
    """Read the store files once, so store phases run from the page cache."""
    for path in store.glob("*.npy"):
        with open(path, "rb") as f:
            while f.read(64 * MB):
                pass


def _row(name: str, data: str, r: dict) -> str:
    return (f"| {name} | {data} | {r['images']:,} | {r['seconds']:.1f} | {r['images'] / r['seconds']:,.0f} | "
            f"{r['hwm_mb']:,.0f} | {r['anon_mb']:,.0f} | {r['file_mb']:,.0f} | {r['load']:.1f} |")


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["images"] / r["seconds"])[len(runs) // 2]


NAMES = {"teacher": "teacher train", "coarse": "coarse pass", "reads": "batch reads (gather + float)"}


def measure(args, n_train: int, n_all: int) -> tuple[list[str], dict]:
    rows = []
    prep = {**_spawn(args, "prepare"), "images": n_all}
    rows.append(_row("prepare (decode PNGs → store)", "image folder", prep))
    ratios = {}
    for phase, name in NAMES.items():
        steps = args.steps if phase == "teacher" else 0
        full = _spawn(args, phase, "store", 0, steps)
        rows.append(_row(name, f"store, all {n_train:,}" + (f", {steps} steps" if steps else ""), full))
        sub_steps = args.ratio_steps if phase == "teacher" else 0
        runs = {src: [] for src in ("store", "memory")}
        for rep in range(args.repeats):  # alternating, so both see the same machine
            for src in runs:
                runs[src].append(_spawn(args, phase, src, args.subset, sub_steps, rep))
        for src, label in (("store", "store"), ("memory", "in memory")):
            data = f"{label}, first {args.subset:,}" + (f", {sub_steps} steps" if sub_steps else "")
            rows.append(_row(name, data + f", median of {args.repeats}", _median_run(runs[src])))
        rate = {src: _median_run(r)["images"] / _median_run(r)["seconds"] for src, r in runs.items()}
        ratios[name] = rate["store"] / rate["memory"]
    if not args.skip_memory_prepare:
        mem = {**_spawn(args, "memory-prepare"), "images": n_all}
        shutil.rmtree(args.work / "cache", ignore_errors=True)
        rows.append(_row("in-memory load_dataset (decode PNGs → tensor cache)", "image folder", mem))
    return rows, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ccfs-store-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--subset", type=int, default=50_000, help="rows of the store-vs-memory comparison")
    ap.add_argument("--steps", type=int, default=0, help="teacher steps over the whole store (0: one epoch)")
    ap.add_argument("--ratio-steps", type=int, default=60, help="teacher steps of the store-vs-memory runs")
    ap.add_argument("--repeats", type=int, default=3, help="alternating store / memory runs (medians)")
    ap.add_argument("--skip-memory-prepare", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="ignore the results kept in WORK/results")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--source", default="store", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)))
        return

    gen_s = generate(args.work / "tree", args.classes, args.per_class, args.threads)
    if gen_s:
        shutil.rmtree(args.work / "results", ignore_errors=True)  # a new image set: measure again
    n_train = args.classes * args.per_class
    rows, ratios = measure(args, n_train, n_train + args.classes * VAL_PER_CLASS)
    store_mb = sum(p.stat().st_size for p in (args.work / "store").glob("*.npy")) / MB
    teacher = f"{args.steps} steps" if args.steps else "one epoch"
    print(f"{datetime.date.today()}, {args.threads} threads, {os.cpu_count()} cores; {n_train:,} train + "
          f"{args.classes * VAL_PER_CLASS:,} val PNGs at {SIZE} px, {args.classes} classes; store {store_mb:,.0f} MiB")
    print(f"teacher: convnet_w32_bn, CE, batch 256, crop + flip, {teacher} over the whole store; "
          "coarse: predict_logits, batch 1024\n")
    print("| phase | data | images | s | img/s | peak RSS MiB (VmHWM) | peak anon MiB | peak file MiB | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nstore / in-memory throughput on the same rows (medians): "
          + ", ".join(f"{name} {r:.2f}" for name, r in ratios.items()))
    print("load: the 1-minute load average when the phase ended (2 = both cores busy)")


if __name__ == "__main__":
    main()
