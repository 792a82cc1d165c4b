"""Our batched RandomResizedCrop + flip against kornia's, and its share of a KD training step.

    python -m bench.augment --batch 256 --threads 2

Every augmentation row starts from the same uint8 batch [256, 1, 28, 28] of Fashion-MNIST
(synthetic pixels if the dataset is not installed), converts it to float pixels in [0, 1]
and applies RandomResizedCrop (area 0.08-1, aspect 3/4-4/3) then a horizontal flip:

- ccfs: `ccfs.data.augment.augment`, one `affine_grid` + `grid_sample` for the batch;
- kornia slice: `kornia.augmentation.RandomResizedCrop` (its default `cropping_mode="slice"`,
  a crop and resize per image) then `RandomHorizontalFlip`;
- kornia resample: the same with `cropping_mode="resample"`, one `warp_affine` for the batch.

"KD step" is one bare training step of the Fashion-MNIST presets on a pre-made normalised
batch: convnet_w32 student forward + backward + SGD step and convnet_w32_bn teacher forward
(`bench.throughput.bare_train`), memory formats as `ccfs.train.fit` picks them.

The rows are called in turn, one call each per round, so a machine busy with other work
slows them alike. Shown: the median time of a call; "vs ccfs", the median over rounds of
(row / ccfs) in the same round; "share of a KD step", the median over rounds of
augmentation / (augmentation + KD step). kornia is optional: `pip install -e ".[bench]"`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from bench.throughput import bare_train
from ccfs.data.augment import AugmentPolicy, augment, to_float
from ccfs.models import create_model
from ccfs.train import use_channels_last

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def arg_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The options both CPU benchmarks take."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=rounds, help="calls of each row, interleaved")
    return ap


def header(module: str, threads: int, load_start: float) -> list[str]:
    """The command, date, threads and machine-load lines that head a result file."""
    return [f"command: python -m {module} {' '.join(sys.argv[1:])}".rstrip(),
            f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {threads} threads (torch.set_num_threads); "
            f"{os.cpu_count()} cores, 1-min load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end"]


def fmnist_batch(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(uint8 images [n, 1, 28, 28], labels [n], where they came from)."""
    if FMNIST.is_dir():
        from ccfs.data.cache import load_dataset

        d = load_dataset("fashion-mnist")
        return d.train.images[:n], d.train.labels[:n], f"Fashion-MNIST (first {n} train images)"
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return x, torch.arange(n) % 10, f"synthetic uint8 pixels ({FMNIST} not found)"


def interleaved(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Milliseconds of every call: each round calls every entry once, in turn (after one
    warm-up round), so slow-downs from other work fall on all entries alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds + 1):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(1000 * (time.perf_counter() - t0))
    return times


def paired(times: dict[str, list[float]], f: Callable[..., float], *names: str) -> float:
    """Median over rounds of f(times of `names` in the same round)."""
    return statistics.median(f(*ts) for ts in zip(*(times[n] for n in names)))


def kornia_augs() -> tuple[dict, str]:
    """{row name: callable on float [B, C, H, W]}, and kornia's version or why it is missing."""
    try:
        import kornia
        import kornia.augmentation as K
    except ImportError:
        return {}, "not installed (pip install -e \".[bench]\"); its rows are skipped"
    rows = {}
    for mode in ("slice", "resample"):
        rows[f"kornia {mode}"] = torch.nn.Sequential(
            K.RandomResizedCrop((28, 28), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), cropping_mode=mode),
            K.RandomHorizontalFlip())
    return rows, kornia.__version__


def kd_step(x_u8: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    """One bare KD step (convnet_w32 <- convnet_w32_bn) on the batch, memory formats as
    `ccfs.train.fit` picks them."""
    student = create_model("convnet_w32", 10, 1, 28)
    teacher = create_model("convnet_w32_bn", 10, 1, 28).eval().requires_grad_(False)
    fmt = {m: torch.channels_last if use_channels_last(m, torch.device("cpu")) else torch.contiguous_format
           for m in (student, teacher)}
    for m in (student, teacher):
        m.to(memory_format=fmt[m])
    x = ((to_float(x_u8) - 0.5) / 0.25).contiguous(memory_format=fmt[student])  # any mean/std
    return lambda: bare_train(student, teacher, x, y, 1)


def report(times: dict[str, list[float]], lines: list[str]) -> None:
    print("\n".join(lines) + "\n")
    print("| row | ms per batch, median (best) | vs ccfs | share of a KD step |")
    print("|---|---|---|---|")
    for name, t in times.items():
        cells = f"{statistics.median(t):.2f} ({min(t):.2f})"
        if name == "KD step":
            print(f"| KD step (convnet_w32 <- convnet_w32_bn) | {cells} | | |")
            continue
        ratio = paired(times, lambda a, c: a / c, name, "ccfs")
        share = paired(times, lambda a, kd: a / (a + kd), name, "KD step")
        print(f"| {name} | {cells} | {ratio:.1f}x | {100 * share:.1f} % |")


def main() -> None:
    args = arg_parser(__doc__, rounds=200).parse_args()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # kornia draws from the global generator
    x_u8, y, source = fmnist_batch(args.batch)
    gen = torch.Generator().manual_seed(0)
    policy = AugmentPolicy(kind="rrc", flip=True, scale=(0.08, 1.0))
    kornia_rows, kornia_version = kornia_augs()
    augs = {"ccfs": lambda x: augment(x, policy, gen), **kornia_rows}
    calls = {name: (lambda a=a: a(to_float(x_u8))) for name, a in augs.items()}
    calls["KD step"] = kd_step(x_u8, y)
    times = interleaved(calls, args.rounds)
    report(times, header("bench.augment", args.threads, load_start) + [
        f"torch {torch.__version__}; kornia {kornia_version}",
        f"data: {source}, batch {args.batch}; {args.rounds} rounds, each calling every row once"])


if __name__ == "__main__":
    main()
