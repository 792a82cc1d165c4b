"""Teacher-stage figures: the cost of recording training dynamics, and whether the
recorded scores make sense.

    ccfs teacher fmnist-quick out=runs/fmnist-quick     # makes the teacher and its scores
    python bench/teacher_scores.py runs/fmnist-quick --threads 2

1. Recording cost: one teacher-recipe epoch over the train set with the recorder hook,
   timing the hook calls themselves (CPU work is synchronous, so the sum is exact), as a
   fraction of the epoch.
2. Spearman correlation between every pair of recorded scores.
3. The teacher's accuracy (un-augmented) on its 10 % hardest and 10 % easiest training
   images by each score.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ccfs.api import new_model
from ccfs.config import load_config
from ccfs.context import Run
from ccfs.objectives import CrossEntropy
from ccfs.scores import to_hardness
from ccfs.teacher.difficulty import DynamicsRecorder
from ccfs.train import fit


class TimedHook:
    def __init__(self, hook):
        self.hook, self.seconds = hook, 0.0

    def __call__(self, *args):
        t0 = time.perf_counter()
        self.hook(*args)
        self.seconds += time.perf_counter() - t0


def recording_cost(run: Run) -> tuple[float, float]:
    d = run.data
    recipe = run.cfg.teacher.train
    recipe.epochs = 1
    hook = TimedHook(DynamicsRecorder(len(d.train), 1))
    model = new_model(run.cfg.teacher.model, d, 0)
    hist = fit(model, d.train, recipe, CrossEntropy(), mean=d.mean, std=d.std, hook=hook, progress=False)
    return hook.seconds, hist.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="run directory with a finished teacher stage")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Run(load_config(str(args.out / "config.yaml")))
    hook_s, epoch_s = recording_cost(run)
    print(f"recording cost: {hook_s:.2f}s of a {epoch_s:.1f}s epoch = {100 * hook_s / epoch_s:.2f} % "
          f"({args.threads} threads)")
    scores = {k: torch.from_numpy(v).float() for k, v in run.teacher.scores.items()}
    names = sorted(scores)
    print("\nSpearman correlation of the 'hardness' keys (higher = harder for every score):")
    hard = {k: to_hardness(scores[k], k).numpy() for k in names}
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for a in names:
        print(f"| {a} | " + " | ".join(f"{spearmanr(hard[a], hard[b])[0]:+.2f}" for b in names) + " |")
    correct = run.teacher.correct.numpy()
    n = len(correct) // 10
    print("\nteacher accuracy (un-augmented train images) on the 10 % hardest / easiest by each score:")
    print("| score | hardest 10 % | easiest 10 % |\n|---|---|---|")
    for k in names:
        order = np.argsort(-hard[k], kind="stable")
        print(f"| {k} | {100 * correct[order[:n]].mean():.1f} | {100 * correct[order[-n:]].mean():.1f} |")


if __name__ == "__main__":
    main()
