"""torch.compile against eager for a KD student step on the CPU.

    python -m bench.compile --threads 2 --batches 32 128 --steps 100 --repeats 3

One step = the student's forward, the teacher's forward (no grad), the KD loss, backward
and an SGD step, on one pre-made batch (the sweep's models: convnet_w32 student, BatchNorm
teacher in eval mode; placed as ccfs places them on the CPU: the instance-norm student
contiguous, the BatchNorm teacher channels-last).
Eager and compiled (`torch.compile`, inductor, default mode, student and teacher) runs
alternate `--repeats` times on fresh models; medians of ms a step. Compile time is the
first compiled run's warm-up; later ones hit the in-process cache.

End to end (`train.compile=true` in `ccfs run`, students paired with eager ones): the study
script research/compile_compare.py, output in the second part of bench/results/compile.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.throughput import train_step
from ccfs.models import create_model
from ccfs.train import use_channels_last


def models(compiled: bool):
    student = create_model("convnet_w32", 10, 1, 28)
    teacher = create_model("convnet_w32_bn", 10, 1, 28).eval().requires_grad_(False)
    if use_channels_last(teacher, torch.device("cpu")):  # as ccfs places a BatchNorm teacher
        teacher.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    if compiled:
        student, teacher = torch.compile(student), torch.compile(teacher)
    return student, teacher, opt


def run(compiled: bool, batch: int, steps: int) -> tuple[float, float]:
    """(ms a step, seconds of warm-up: compilation on the first compiled run)."""
    torch.manual_seed(0)
    student, teacher, opt = models(compiled)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    t0 = time.perf_counter()
    for _ in range(3):
        train_step(student, teacher, opt, x, y, temperature=4.0)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(student, teacher, opt, x, y, temperature=4.0)
    return (time.perf_counter() - t0) / steps * 1000, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--steps", type=int, default=100, help="timed steps a run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps a run, {args.repeats} runs each\n")
    print("| batch | eager ms/step | compiled ms/step | ratio | first compile, s |")
    print("|---|---|---|---|---|")
    for batch in args.batches:
        eager, comp, warm = [], [], []
        for _ in range(args.repeats):
            eager.append(run(False, batch, args.steps)[0])
            ms, w = run(True, batch, args.steps)
            comp.append(ms)
            warm.append(w)
        e, c = statistics.median(eager), statistics.median(comp)
        print(f"| {batch} | {e:.1f} | {c:.1f} | {c / e:.2f} | {warm[0]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
