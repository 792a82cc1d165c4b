"""Training throughput on the CPU, contiguous vs channels-last memory format, per model.

    python -m bench.channels_last --batch 256 --threads 2

For each model, one bare cross-entropy training step (forward + loss + backward + SGD
step, `bench.throughput.bare_train`) on one normalised batch of Fashion-MNIST (synthetic
pixels if it is not installed), with the model and the batch both in one memory format
(two copies of the model, one per format). `ccfs.train.use_channels_last` picks
channels-last on the CPU only for BatchNorm nets; "ccfs picks" says which it picks.

Every (model, format) step is taken in turn, once per round, so a machine busy with other
work slows them alike. Shown: img/s of the median step; "channels-last / contiguous", the
median over rounds of the speed ratio of the two steps of the same model in that round.
"""
from __future__ import annotations

import copy
import os
import statistics

import torch
from torch import nn

from bench.augment import arg_parser, fmnist_batch, header, interleaved, paired
from bench.throughput import bare_train
from ccfs.models import create_model
from ccfs.train import use_channels_last

FORMATS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}


def norm_of(model: nn.Module) -> str:
    kinds = {nn.BatchNorm2d: "batch", nn.GroupNorm: "instance (GroupNorm)"}
    return next((kinds[type(m)] for m in model.modules() if type(m) in kinds), "none")


def train_steps(names: list[str], x: torch.Tensor, y: torch.Tensor) -> dict:
    """{"model format": one training step} for every model and format."""
    steps = {}
    for name in names:
        model = create_model(name, 10, 1, 28)
        for fmt_name, fmt in FORMATS.items():
            m = copy.deepcopy(model).to(memory_format=fmt)
            xf = x.contiguous(memory_format=fmt)
            steps[f"{name} {fmt_name}"] = lambda m=m, xf=xf: bare_train(m, None, xf, y, 1)
    return steps


def report(names: list[str], times: dict[str, list[float]], batch: int, lines: list[str]) -> None:
    print("\n".join(lines) + "\n")
    print("| model | norm | contiguous img/s | channels-last img/s | channels-last / contiguous | ccfs picks |")
    print("|---|---|---|---|---|---|")
    for name in names:
        model = create_model(name, 10, 1, 28)
        rates = [f"{1000 * batch / statistics.median(times[f'{name} {f}']):.0f}" for f in FORMATS]
        ratio = paired(times, lambda c, cl: c / cl, f"{name} contiguous", f"{name} channels-last")
        picks = "channels-last" if use_channels_last(model, torch.device("cpu")) else "contiguous"
        print(f"| {name} | {norm_of(model)} | {' | '.join(rates)} | {ratio:.2f} | {picks} |")


def main() -> None:
    ap = arg_parser(__doc__, rounds=30)
    ap.add_argument("--models", nargs="+", default=["convnet_w32_bn", "convnet_w32", "convnet"])
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_u8, y, source = fmnist_batch(args.batch)
    x = (x_u8.float() / 255 - 0.5) / 0.25  # any mean/std: they do not change the timing
    times = interleaved(train_steps(args.models, x, y), args.rounds)
    report(args.models, times, args.batch, header("bench.channels_last", args.threads, load_start) + [
        f"torch {torch.__version__}; data: {source}, batch {args.batch}; train img/s; "
        f"{args.rounds} rounds, each taking one step of every (model, format)"])


if __name__ == "__main__":
    main()
