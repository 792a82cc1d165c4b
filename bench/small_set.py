"""Per-epoch cost of `fit` on a small synthetic set against the bare compute.

    python bench/small_set.py --model resnet18_modified --images 40 --epochs 6 --threads 2

The official CCFS code rebuilds its data loader and transforms every image in Python each
epoch; in ccfs an epoch over a small set should cost about its compute. "bare" runs the
same number of optimizer steps with the same batch shapes (KD: student forward+backward,
teacher forward, SGD step) on pre-made tensors; the difference per epoch is the loop's
overhead (gather, augmentation, normalisation, scheduling, bookkeeping).
"""
from __future__ import annotations

import argparse
import time

import torch

from ccfs.data.datasets import Split
from ccfs.models import create_model
from ccfs.objectives import KD
from ccfs.train import Recipe, batch_indices, fit, use_channels_last
from bench.throughput import bare_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18_modified")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    c, s, n = args.channels, args.size, args.images
    data = Split(torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8), torch.arange(n) % 10)
    mean, std = (0.5,) * c, (0.25,) * c
    recipe = Recipe(epochs=args.epochs, batch_size=0, augment="rrc")
    bs = recipe.batch_for(n)
    steps = len(batch_indices(n, bs, g))
    teacher = create_model(args.model, 10, c, s).eval().requires_grad_(False)
    student = create_model(args.model, 10, c, s)
    fmt = torch.channels_last if use_channels_last(student, torch.device("cpu")) else torch.contiguous_format
    teacher.to(memory_format=fmt)
    student.to(memory_format=fmt)
    fit(student, data, Recipe(epochs=1, batch_size=bs), KD(teacher), mean=mean, std=std,
        progress=False)  # warm-up
    t0 = time.perf_counter()
    fit(student, data, recipe, KD(teacher), mean=mean, std=std, progress=False)
    loop = (time.perf_counter() - t0) / args.epochs
    x = torch.randn(bs, c, s, s).contiguous(memory_format=fmt)
    y = torch.arange(bs) % 10
    tail = n - bs * (steps - 1)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        bare_train(student, teacher, x, y, steps - 1)
        bare_train(student, teacher, x[:tail], y[:tail], 1)
    bare = (time.perf_counter() - t0) / args.epochs
    print(f"{args.model}, {n} images ({c}x{s}x{s}), batch {bs}, {steps} steps/epoch, {args.threads} threads")
    print("| per epoch | seconds |\n|---|---|")
    print(f"| ccfs fit (whole call / epochs) | {loop:.3f} |\n| bare compute | {bare:.3f} |")
    print(f"| overhead | {loop - bare:+.3f} ({100 * (loop - bare) / bare:+.1f} %) |")


if __name__ == "__main__":
    main()
