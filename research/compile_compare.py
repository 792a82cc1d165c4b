"""`train.compile` end to end: the students of two run directories paired by (method, IPC, seed).

    python -m research.compile_compare runs/cmp-eager runs/cmp-compile

Two run directories made over the same teacher, one eager and one with `train.compile=true`
(a sweep's points included). Per student: training seconds (compilation included) and
accuracy, eager against compiled; then per (method, IPC) the time ratio and the paired
accuracy differences. Its output (15 students at IPC 55, 275 and 1 100 and full data) is the
second part of bench/results/compile.md; the step timing, its first part, is bench/compile.py.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ccfs.records import load


def students(run_dir: Path) -> dict[tuple, dict]:
    """Every student record under a run directory (a sweep's points included), by
    (method, IPC, seed)."""
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
    ap.add_argument("eager", type=Path, metavar="EAGER_RUN")
    ap.add_argument("compiled", type=Path, metavar="COMPILED_RUN")
    args = ap.parse_args()
    compare(args.eager, args.compiled)


if __name__ == "__main__":
    main()
