"""Choosing the student recipe on the validation split (the test set is never read here).

    python -m research.recipe RUN_DIR --preset fmnist-ipc50 --methods random ccfs --seeds 0 [--threads 2]

RUN_DIR is a finished `ccfs select` of PRESET (teacher, distilled images and the methods'
selections for the given seeds; made with the preset's own recipe). For every variant below
(a set of train.* settings over the preset's), one KD student per method and seed trains on
that selection and is tested on the validation split only; the table gives each variant's
validation accuracy per method and their mean, and names the best mean. The variants
follow what the field's evaluation protocols change: longer training (a fixed number of
optimizer steps, so epochs shrink as the set grows), the KD temperature, a softer
RandomResizedCrop at 28 px, cutmix (SRe2L / RDED evaluation) and the learning rate.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time
from dataclasses import replace

import torch

VARIANTS = {  # name -> train.* settings over the preset's recipe
    "preset": {},
    "4800 steps, lr 0.05": {"steps": 4800, "lr": 0.05},
    "4800 steps, lr 0.05, T 4": {"steps": 4800, "lr": 0.05, "temperature": 4.0},
    "4800 steps, lr 0.05, T 4, crop ≥ 0.5": {"steps": 4800, "lr": 0.05, "temperature": 4.0, "rrc_min_scale": 0.5},
    "4800 steps, lr 0.05, T 4, crop ≥ 0.5, cutmix": {"steps": 4800, "lr": 0.05, "temperature": 4.0,
                                                      "rrc_min_scale": 0.5, "mix": "cutmix"},
    "4800 steps, lr 0.1, T 4, crop ≥ 0.5": {"steps": 4800, "lr": 0.1, "temperature": 4.0, "rrc_min_scale": 0.5},
    "2400 steps, lr 0.05, T 4, crop ≥ 0.5": {"steps": 2400, "lr": 0.05, "temperature": 4.0, "rrc_min_scale": 0.5},
    # second round, around the chosen recipe (4800 steps, lr 0.05, T 4, crop ≥ 0.5)
    "9600 steps, lr 0.05, T 4, crop ≥ 0.5": {"steps": 9600, "lr": 0.05, "temperature": 4.0, "rrc_min_scale": 0.5},
    "19200 steps, lr 0.05, T 4, crop ≥ 0.5": {"steps": 19200, "lr": 0.05, "temperature": 4.0, "rrc_min_scale": 0.5},
    "4800 steps, lr 0.05, T 2, crop ≥ 0.5": {"steps": 4800, "lr": 0.05, "temperature": 2.0, "rrc_min_scale": 0.5},
    "4800 steps, lr 0.05, T 8, crop ≥ 0.5": {"steps": 4800, "lr": 0.05, "temperature": 8.0, "rrc_min_scale": 0.5},
    "4800 steps, lr 0.05, T 4, crop ≥ 0.7": {"steps": 4800, "lr": 0.05, "temperature": 4.0, "rrc_min_scale": 0.7},
    "4800 steps, lr 0.05, T 4, crop ≥ 0.5, mixup": {"steps": 4800, "lr": 0.05, "temperature": 4.0,
                                                     "rrc_min_scale": 0.5, "mix": "mixup"},
    # third round, around 9600 steps
    "9600 steps, lr 0.05, T 4, crop ≥ 0.7": {"steps": 9600, "lr": 0.05, "temperature": 4.0, "rrc_min_scale": 0.7},
    "9600 steps, lr 0.1, T 4, crop ≥ 0.5": {"steps": 9600, "lr": 0.1, "temperature": 4.0, "rrc_min_scale": 0.5},
}


def student_val_acc(run, recipe, method: str, seed: int, student_seed: int | None = None) -> tuple[float, float]:
    """(validation accuracy %, seconds) of one KD student on the method's selection of `seed`;
    the student's initialisation and augmentation follow `student_seed` (default: `seed`)."""
    from ccfs.api import new_model
    from ccfs.objectives import make_objective
    from ccfs.train import fit

    d = run.data
    synthetic, _, _ = run.selection(method, run.selection_seed(method, seed))
    student_seed = seed if student_seed is None else student_seed
    model = new_model(run.cfg.eval.models[0], d, student_seed)
    t0 = time.perf_counter()
    hist = fit(model, synthetic, recipe, make_objective("kd", run.teacher, recipe.temperature), mean=d.mean,
               std=d.std, device=run.device, seed=student_seed, test=None, val=d.val, progress=False)
    return hist.val_acc, time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--preset", default="fmnist-ipc50")
    p.add_argument("--methods", nargs="+", default=["random", "ccfs"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--student-seeds", nargs="+", type=int, default=None,
                   help="train one student per these seeds on each selection (default: the selection's seed)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names from VARIANTS")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="config overrides, as for ccfs")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from ccfs.config import load_config
    from ccfs.context import Run

    cfg = load_config(a.preset, [*a.overrides, f"out={a.run_dir}", f"eval.seeds={a.seeds}"])
    run = Run(cfg)
    if run.data.val is None:
        raise SystemExit("the preset has no validation split: set data.val_size")
    print(f"# Student recipe on validation: {a.preset}, run {a.run_dir}, {datetime.date.today()}, "
          f"{a.threads} threads\n")
    print(f"{run.data.summary()}; students {cfg.eval.models[0]}, KD from {cfg.teacher.model}; "
          f"selection seeds {a.seeds}, student seeds {a.student_seeds or 'the same'}; the test set is not read.\n")
    print("| variant | " + " | ".join(f"{m} val %" for m in a.methods) + " | mean val % | s per student |")
    print("|---|" + "---|" * (len(a.methods) + 2))
    best = None
    for name in a.variants:
        recipe = replace(cfg.train, **VARIANTS[name])
        accs, secs = {}, []
        for m in a.methods:
            vals = []
            for s in a.seeds:
                for t in a.student_seeds or [s]:
                    acc, sec = student_val_acc(run, recipe, m, s, t)
                    vals.append(acc)
                    secs.append(sec)
            accs[m] = statistics.fmean(vals)
        mean = statistics.fmean(accs.values())
        print(f"| {name} | " + " | ".join(f"{accs[m]:.2f}" for m in a.methods) +
              f" | {mean:.2f} | {statistics.fmean(secs):.0f} |", flush=True)
        if best is None or mean > best[0]:
            best = (mean, name)
    print(f"\nbest mean validation accuracy: {best[1]} ({best[0]:.2f} %)")


if __name__ == "__main__":
    main()
