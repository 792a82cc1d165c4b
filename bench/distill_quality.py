"""Distillation figures on a finished teacher: student accuracy, synthesis speed, memory.

    ccfs teacher fmnist-quick out=runs/fmnist-quick
    python bench/distill_quality.py runs/fmnist-quick --ipc 10 50 --seeds 0 1 2 --threads 2
    python bench/distill_quality.py runs/fmnist-quick --sweep     # the Fashion-MNIST tuning

For each IPC, KD students (the run's train recipe and student model) are trained on
(a) the distilled images (the run's distill.* settings), (b) their Gaussian
initialisation, i.e. the same noise never optimised, and (c) random real images of the
same IPC. Synthesis speed is images/s at the configured iteration count; peak memory is
the process's peak RSS growth during synthesis (`synthesize` never sees the dataset).
`--sweep` trains one seed of distill-only students at IPC 10 over lr x r_bn x iterations.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ccfs.api import train_student
from ccfs.config import load_config
from ccfs.context import Run
from ccfs.data.datasets import Split
from ccfs.distill.bn_matching import SynthParams, synthesize
from ccfs.distill.folder import quantize
from ccfs.distill.synthesis import synth_params
from ccfs.selection.baselines import random_balanced


def distilled(run: Run, ipc: int, params: SynthParams, seed: int = 0):
    d = run.data
    labels = torch.arange(d.num_classes).repeat_interleave(ipc)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    px = synthesize(run.teacher.model, labels, tuple(d.train.images.shape[1:]), d.mean, std=d.std, params=params,
                    generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return Split(quantize(px), labels), seconds, peak_mb


def gaussian(run: Run, ipc: int, seed: int = 0) -> Split:
    """The Gaussian initialisation of synthesis (N(0, 1) in normalised space), unoptimised."""
    d = run.data
    labels = torch.arange(d.num_classes).repeat_interleave(ipc)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(labels), *d.train.images.shape[1:], generator=g)
    px = z * torch.tensor(d.std).view(1, -1, 1, 1) + torch.tensor(d.mean).view(1, -1, 1, 1)
    return Split(quantize(px.clamp(0, 1)), labels)


def student_accs(run: Run, data: Split, seeds) -> list[float]:
    d, out = run.data, []
    for seed in seeds:
        hist = train_student(d, data, run.teacher, model=run.cfg.eval.models[0], recipe=run.cfg.train, seed=seed,
                             objective=run.cfg.eval.objective, device=run.device)
        out.append(hist.final_acc)
    return out


def fmt(v: list[float]) -> str:
    return f"{statistics.fmean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Run(load_config(str(args.out / "config.yaml"), ["progress=false"]))
    base = synth_params(run.cfg.distill)
    if args.sweep:
        print("| lr | r_bn | iterations | distill-only IPC 10 acc % (seed 0) | synth s |\n|---|---|---|---|---|")
        for lr in (0.05, 0.1, 0.25):
            for r_bn in (0.01, 0.1, 1.0):
                for its in (300,):
                    data, s, _ = distilled(run, 10, replace(base, lr=lr, r_bn=r_bn, iterations=its))
                    print(f"| {lr} | {r_bn} | {its} | {student_accs(run, data, [0])[0]:.2f} | {s:.0f} |", flush=True)
        return
    print(f"students: {run.cfg.eval.models[0]}, KD from {run.cfg.teacher.model}, {run.cfg.train.epochs} epochs, "
          f"seeds {args.seeds}; synthesis: {base.method}, {base.iterations} iterations, {args.threads} threads")
    print("| IPC | distilled acc % | Gaussian init acc % | random real acc % | synthesis img/s | synthesis peak RSS growth MB |")
    print("|---|---|---|---|---|---|")
    for ipc in args.ipc:
        dist, seconds, peak = distilled(run, ipc, base)
        real = run.data.train.subset(random_balanced(run.data.train.labels, ipc, torch.Generator().manual_seed(0)))
        row = [fmt(student_accs(run, s, args.seeds)) for s in (dist, gaussian(run, ipc), real)]
        print(f"| {ipc} | {row[0]} | {row[1]} | {row[2]} | {len(dist) / seconds:.1f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
