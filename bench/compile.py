"""torch.compile against eager for a KD student step on the CPU.

    python -m bench.compile --threads 2 --batches 32 128 --steps 100 --repeats 3

One step = the student's forward, the teacher's forward (no grad), the KD loss, backward
and an SGD step, on one pre-made batch (the sweep's models: convnet_w32 student, BatchNorm
teacher in eval mode; placed as ccfs places them on the CPU: the instance-norm student
contiguous, the BatchNorm teacher channels-last).
Eager and compiled (`torch.compile`, inductor, default mode, student and teacher) runs
alternate `--repeats` times on fresh models; medians of ms a step. Compile time is the
first compiled run's warm-up; later ones hit the in-process cache.

End to end, `train.compile` in `ccfs run`: two run directories made with the same teacher,
one eager and one with `train.compile=true`, paired by student (method, IPC, seed):

    python -m bench.compile --compare runs/cmp-eager runs/cmp-compile
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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


def students(run_dir: Path) -> dict[tuple, dict]:
    """Every student record under a run directory (a sweep's points included), by
    (method, IPC, seed)."""
    from ccfs.records import load

    return {(r["method"], r["ipc"], r["seed"]): r for f in sorted(run_dir.glob("**/results.jsonl"))
            for r in load(f)}


def compare(eager_dir: Path, compiled_dir: Path) -> None:
    """Per student: training seconds (compilation included) and accuracy, eager against
    compiled, then per (method, IPC) the time ratio and the paired accuracy differences."""
    eager, comp = students(eager_dir), students(compiled_dir)
    both = sorted(eager.keys() & comp.keys())
    print("| method | IPC | seed | eager s | compiled s | ratio | val eager / compiled | test eager / compiled |")
    print("|---|---|---|---|---|---|---|---|")
    for k in both:
        e, c = eager[k], comp[k]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {e['train_seconds']:.0f} | {c['train_seconds']:.0f} | "
              f"{c['train_seconds'] / e['train_seconds']:.2f} | {e['val_acc']:.2f} / {c['val_acc']:.2f} | "
              f"{e['final_acc']:.2f} / {c['final_acc']:.2f} |")
    print("\n| method | IPC | students | time ratio (sum) | val compiled − eager | test compiled − eager |")
    print("|---|---|---|---|---|---|")
    groups = sorted({k[:2] for k in both})
    for g in groups + [("all", "")]:
        ks = [k for k in both if g[0] == "all" or k[:2] == g]
        ratio = sum(comp[k]["train_seconds"] for k in ks) / sum(eager[k]["train_seconds"] for k in ks)
        dv = [comp[k]["val_acc"] - eager[k]["val_acc"] for k in ks]
        dt = [comp[k]["final_acc"] - eager[k]["final_acc"] for k in ks]
        sd = (lambda d: statistics.stdev(d) if len(d) > 1 else 0.0)
        print(f"| {g[0]} | {g[1]} | {len(ks)} | {ratio:.2f} | {statistics.mean(dv):+.2f} ± {sd(dv):.2f} | "
              f"{statistics.mean(dt):+.2f} ± {sd(dt):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("EAGER_RUN", "COMPILED_RUN"),
                    help="pair the student records of two run directories instead of timing steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--steps", type=int, default=100, help="timed steps a run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
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
