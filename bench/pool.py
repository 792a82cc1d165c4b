"""torch's AvgPool2d(2, 2) against ccfs's AvgPool2x2 in a KD student step on the CPU.

    python -m bench.pool --threads 2 --batches 32 64 128 --steps 40 --repeats 5

The step is the evaluate stage's: a convnet_w32 student (instance norm, contiguous tensors on
the CPU) learning from a convnet_w32_bn teacher (channels-last on the CPU, so its pooling is
torch's either way), forward, KD loss, backward, SGD. Both variants start from the same weights
and see the same batches; the runs alternate `--repeats` times and the median ms a step is
kept. The weights after the timed steps must be equal bit for bit, else the script fails.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from ccfs.models import create_model
from ccfs.models.pool import AvgPool2x2
from ccfs.objectives import kd_loss


def student(fast: bool) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("convnet_w32", 10, 1, 28)
    for i, layer in enumerate(model.features):
        if isinstance(layer, nn.AvgPool2d):
            model.features[i] = AvgPool2x2() if fast else nn.AvgPool2d(2, 2)
    return model


def run(fast: bool, teacher: nn.Module, batches: list[torch.Tensor], steps: int) -> tuple[float, torch.Tensor]:
    model = student(fast)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step(x):
        with torch.no_grad():
            t_logits = teacher(x.contiguous(memory_format=torch.channels_last))
        loss = kd_loss(model(x), t_logits, 4.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(batches[i % len(batches)])
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    ms = (time.perf_counter() - t0) / steps * 1e3
    return ms, torch.cat([p.detach().flatten() for p in model.parameters()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    teacher = create_model("convnet_w32_bn", 10, 1, 28).eval().to(memory_format=torch.channels_last)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps a run, {args.repeats} runs each\n")
    print("| batch | torch AvgPool2d ms/step | AvgPool2x2 ms/step | ratio | weights equal |")
    print("|---|---|---|---|---|")
    for b in args.batches:
        batches = [torch.randn(b, 1, 28, 28) for _ in range(4)]
        times = {False: [], True: []}
        weights = {}
        for _ in range(args.repeats):
            for fast in (False, True):
                ms, w = run(fast, teacher, batches, args.steps)
                times[fast].append(ms)
                weights[fast] = w
        equal = torch.equal(weights[False], weights[True])
        slow, quick = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {b} | {slow:.1f} | {quick:.1f} | {quick / slow:.2f} | {'yes' if equal else 'NO'} |", flush=True)
        if not equal:
            raise SystemExit("the two poolings trained different weights")


if __name__ == "__main__":
    main()
