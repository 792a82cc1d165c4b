"""The Fashion-MNIST tensor cache: the first load (decode the IDX files and write the cache)
and the reloads from it, in a fresh temporary cache folder (CCFS_CACHE).

    python -m bench.cache --threads 2

first load: `ccfs.data.cache.load_dataset("fashion-mnist")` with no cache yet (gunzip and
decode the IDX files, then write the cache file). reload: the same call once the cache file
exists (the `torch.load` of the cached tensors), --repeats times; the file was just written,
so it is read from the page cache. Shown: seconds of the first load; median, fastest and
slowest reload; the cache file's size.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.augment import FMNIST, header
from ccfs.data.cache import load_dataset


def timed_load(root: Path) -> float:
    """Seconds of one `load_dataset("fashion-mnist", root)`."""
    t0 = time.perf_counter()
    load_dataset("fashion-mnist", str(root))
    return time.perf_counter() - t0


def measure(root: Path, repeats: int) -> tuple[float, list[float], int]:
    """(first-load seconds, reload seconds, cache bytes) in a fresh temporary cache folder."""
    old = os.environ.get("CCFS_CACHE")
    with tempfile.TemporaryDirectory(prefix="ccfs-cache-bench-") as tmp:
        os.environ["CCFS_CACHE"] = tmp
        try:
            first = timed_load(root)
            reloads = [timed_load(root) for _ in range(repeats)]
            size = sum(p.stat().st_size for p in Path(tmp).glob("*.pt"))
        finally:
            if old is None:
                os.environ.pop("CCFS_CACHE", None)
            else:
                os.environ["CCFS_CACHE"] = old
    return first, reloads, size


def report(first: float, reloads: list[float], size: int, lines: list[str]) -> None:
    print("\n".join(lines) + "\n")
    print("| load | seconds |")
    print("|---|---|")
    print(f"| first (decode + write cache) | {first:.2f} |")
    print(f"| reload, median of {len(reloads)} | {statistics.median(reloads):.3f} |")
    print(f"| reload, fastest / slowest | {min(reloads):.3f} / {max(reloads):.3f} |")
    print(f"\ncache file: {size / (1 << 20):.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="reloads once the cache exists")
    ap.add_argument("--root", type=Path, default=FMNIST, help="folder of the Fashion-MNIST IDX files")
    args = ap.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"bench.cache: {args.root} not found; pass the Fashion-MNIST folder with --root")
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    first, reloads, size = measure(args.root, args.repeats)
    report(first, reloads, size, header("bench.cache", args.threads, load_start) + [
        f"torch {torch.__version__}; data: {args.root} (60,000 + 10,000 images of 1 x 28 x 28 uint8)"])


if __name__ == "__main__":
    main()
