"""Data parallelism on this CPU: 2 ranks × 1 thread (torchrun, gloo) against 1 process × 2
threads, for a teacher epoch, a coarse pass and an evaluation of 6 students.

    python bench/distributed.py [--repeats 2] [--student-epochs 10]

Workloads on Fashion-MNIST (the real files): one epoch of the quick teacher
(convnet_w32_bn, cross-entropy, batch 256, the difficulty recorder on) over the 60 000
train images; a coarse pass (convnet_w32 logits on the 60 000 train images); 6 KD students
(convnet_w32 from the teacher, 500 images = IPC 50, `--student-epochs` epochs each) — under
torchrun one student per rank at a time, as `ccfs evaluate` spreads them. The two modes run
alternately `--repeats` times; medians are printed with their ratio (> 1: 2 ranks faster).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def worker(student_epochs: int) -> dict:
    """One measurement in this process (a rank under torchrun); rank 0 returns the timings."""
    from ccfs import distributed
    from ccfs.config import Recipe
    from ccfs.data.cache import load_dataset
    from ccfs.models import create_model
    from ccfs.objectives import KD, CrossEntropy
    from ccfs.selection.baselines import random_balanced
    from ccfs.teacher.difficulty import DynamicsRecorder
    from ccfs.train import fit, predict_logits

    distributed.init("cpu")
    d = load_dataset("fashion-mnist")
    out = {}

    def timed(name, fn):
        distributed.barrier()
        t0 = time.perf_counter()
        fn()
        distributed.barrier()
        out[name] = time.perf_counter() - t0

    torch.manual_seed(0)
    teacher = create_model("convnet_w32_bn", 10, 1, 28)
    recipe = Recipe(epochs=1, batch_size=256, lr=0.05, augment="crop", crop_pad=2)
    timed("teacher epoch", lambda: fit(teacher, d.train, recipe, CrossEntropy(), mean=d.mean, std=d.std,
                                       hook=DynamicsRecorder(len(d.train), 1), progress=False))
    torch.manual_seed(1)
    flt = create_model("convnet_w32", 10, 1, 28)
    timed("coarse pass", lambda: predict_logits(flt, d.train.images, d.mean, d.std))
    teacher.eval().requires_grad_(False)
    subset = d.train.subset(random_balanced(d.train.labels, 50, torch.Generator().manual_seed(0)))
    student_recipe = Recipe(epochs=student_epochs, batch_size=0, lr=0.02, warmup_epochs=1)

    def students():
        mine = range(distributed.rank(), 6, distributed.world_size())
        with distributed.local():
            for seed in mine:
                torch.manual_seed(seed)
                fit(create_model("convnet_w32", 10, 1, 28), subset, student_recipe, KD(teacher, 20.0),
                    mean=d.mean, std=d.std, seed=seed, test=d.test, progress=False)

    timed("6 students", students)
    distributed.shutdown()
    return out


def measure(ranks: int, student_epochs: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // ranks)}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks)]
                if ranks > 1 else [sys.executable])
    cmd = [*launcher, __file__, "--worker", "--threads", str(2 // ranks), "--student-epochs", str(student_epochs)]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--student-epochs", type=int, default=10)
    args = ap.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        result = worker(args.student_epochs)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result))
        return
    one, two = [], []
    for _ in range(args.repeats):
        one.append(measure(1, args.student_epochs))
        two.append(measure(2, args.student_epochs))
    print(f"2 CPU cores; 1 process x 2 threads against torchrun 2 ranks x 1 thread (gloo); "
          f"medians of {args.repeats} alternating runs; students {args.student_epochs} epochs each")
    print("| workload | 1 x 2 threads s | 2 ranks x 1 thread s | speed-up of 2 ranks |")
    print("|---|---|---|---|")
    for key in one[0]:
        a, b = statistics.median(r[key] for r in one), statistics.median(r[key] for r in two)
        print(f"| {key} | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
