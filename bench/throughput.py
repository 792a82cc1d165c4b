"""Training-loop and inference throughput against the bare compute of the same model.

    python bench/throughput.py --model convnet --batch 256 --threads 2

"bare" = forward + loss + backward + SGD step (+ the teacher's forward for KD) on one
pre-made, pre-normalised batch, repeated; "loop" = `ccfs.train.fit` for one epoch over a
cached uint8 subset of Fashion-MNIST (gather, RandomResizedCrop + flip on the batch,
normalise, objective, step). Inference: `predict_logits` over uint8 images vs the bare
forward on pre-made batches. Runs alternate bare/loop `--repeats` times; medians shown.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ccfs.data.cache import load_dataset
from ccfs.models import create_model
from ccfs.objectives import KD, CrossEntropy, kd_loss
from ccfs.train import Recipe, fit, predict_logits, use_channels_last


def train_step(model, teacher, opt, x, y, temperature) -> None:
    """One bare step: forward, the teacher's forward for KD (CE without a teacher), backward, SGD."""
    logits = model(x)
    if teacher is None:
        loss = F.cross_entropy(logits, y)
    else:
        with torch.no_grad():
            t_logits = teacher(x)
        loss = kd_loss(logits, t_logits, temperature)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_train(model, teacher, x, y, steps, temperature=20.0):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, teacher, opt, x, y, temperature)
    return steps * len(x) / (time.perf_counter() - t0)


def loop_train(model, objective, data, recipe, mean, std):
    hist = fit(model, data, recipe, objective, mean=mean, std=std, progress=False)
    return len(data) * recipe.epochs / hist.seconds


@torch.no_grad()
def bare_infer(model, x, steps):
    model.eval()
    t0 = time.perf_counter()
    for _ in range(steps):
        model(x)
    return steps * len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="convnet")
    ap.add_argument("--teacher", default="convnet_w32_bn", help="teacher architecture for KD")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="batches per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = load_dataset("fashion-mnist")
    n = args.steps * args.batch
    data = d.train.subset(range(n))
    device = torch.device("cpu")
    model = create_model(args.model, 10, 1, 28)
    teacher = create_model(args.teacher, 10, 1, 28).eval().requires_grad_(False)
    cl = use_channels_last(model, device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model.to(memory_format=fmt)
    teacher.to(memory_format=torch.channels_last if use_channels_last(teacher, device) else torch.contiguous_format)
    x = ((data.images[: args.batch].float() / 255 - d.mean[0]) / d.std[0]).contiguous(memory_format=fmt)
    y = data.labels[: args.batch]
    recipe = Recipe(epochs=1, batch_size=args.batch, augment="rrc")
    rows = []
    for name, obj, tch in (("train CE", CrossEntropy(), None), ("train KD", KD(teacher, 20.0), teacher)):
        bare_train(model, tch, x, y, 2)  # warm-up
        loop_train(model, obj, data.subset(range(args.batch * 2)), recipe, d.mean, d.std)
        b, l = [], []
        for _ in range(args.repeats):
            b.append(bare_train(model, tch, x, y, args.steps))
            l.append(loop_train(model, obj, data, recipe, d.mean, d.std))
        rows.append((name, statistics.median(b), statistics.median(l)))
    b, l = [], []
    for _ in range(args.repeats):
        b.append(bare_infer(model, x, args.steps))
        t0 = time.perf_counter()
        predict_logits(model, data.images, d.mean, d.std, batch_size=args.batch)
        l.append(n / (time.perf_counter() - t0))
    rows.append(("inference", statistics.median(b), statistics.median(l)))
    print(f"model {args.model}, batch {args.batch}, {args.threads} threads, {args.steps} batches x "
          f"{args.repeats} repeats, channels_last={cl}")
    print(f"| {'workload':<10} | bare img/s | ccfs img/s | ratio |")
    print("|---|---|---|---|")
    for name, bare, loop in rows:
        print(f"| {name:<10} | {bare:10.0f} | {loop:10.0f} | {loop / bare:5.2f} |")


if __name__ == "__main__":
    main()
