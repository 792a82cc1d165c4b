"""A whole `ccfs run` decomposed into its passes, against the raw compute of those passes.

    python bench/passes.py PRESET [key=value ...]          # e.g. fmnist-quick threads=2
    bash bench/refbench.sh REFBENCH_DIR                      # the official CIFAR-10 setting

Runs the preset end to end in this process (a fresh run directory under /tmp unless out= is
given) while counting every image each model trains on (per epoch, per KD step the teacher's
forward too) and every image it infers. Afterwards it measures, in the same process and with
the same threads, the bare throughput of each model: a training step (forward, loss,
backward, SGD step, plus the teacher's forward for KD) on one pre-made normalised batch of
the sizes the run used, and inference on pre-made batches. Raw compute = images / bare
throughput, summed; the run's wall time over it is the overhead ccfs adds (data handling,
augmentation, bookkeeping, I/O). Distillation by BN matching is timed but not decomposed.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict

import torch
from throughput import bare_infer, bare_train  # bench/ is sys.path[0] when run as a script

import ccfs.api
import ccfs.models
import ccfs.selection.run
import ccfs.distill.synthesis
import ccfs.train
from ccfs.config import load_config
from ccfs.objectives import KD

TRAIN = defaultdict(int)  # (model, batch, kd teacher or "") -> images stepped
INFER = defaultdict(int)  # model -> images inferred
FIT_SECONDS = defaultdict(float)
SYNTH_SECONDS = [0.0]  # BN-matching distillation, timed apart


def _name(model) -> str:
    return getattr(model, "_bench_name", type(model).__name__)


def instrument() -> None:
    real_create, real_fit, real_predict = ccfs.models.create_model, ccfs.train.fit, ccfs.train.predict_logits

    def create(name, *a, **kw):
        m = real_create(name, *a, **kw)
        m._bench_name = name
        return m

    def fit(model, data, recipe, objective, **kw):
        teacher = _name(objective.teacher) if isinstance(objective, KD) else ""
        TRAIN[(_name(model), recipe.batch_for(len(data)), teacher)] += len(data) * recipe.epochs_for(len(data))
        t0 = time.perf_counter()
        out = real_fit(model, data, recipe, objective, **kw)
        FIT_SECONDS[_name(model)] += time.perf_counter() - t0
        return out

    def predict(model, images, *a, **kw):
        INFER[_name(model)] += len(images) if kw.get("rows") is None else len(kw["rows"])
        return real_predict(model, images, *a, **kw)

    real_synth = ccfs.distill.synthesis.synthesize_classes

    def synth(*a, **kw):
        t0 = time.perf_counter()
        out = real_synth(*a, **kw)
        SYNTH_SECONDS[0] += time.perf_counter() - t0
        return out

    ccfs.distill.synthesis.synthesize_classes = synth
    for mod in (ccfs.models, ccfs.api):
        mod.create_model = create
    for mod in (ccfs.train, ccfs.api):
        mod.fit = fit
    for mod in (ccfs.train, ccfs.api, ccfs.selection.run):
        mod.predict_logits = predict


def _placed(name: str, shape, classes: int):
    """A fresh registry model in the memory format ccfs trains it in, and that format."""
    model = ccfs.models.create_model(name, classes, shape[0], shape[1])
    fmt = torch.channels_last if ccfs.train.use_channels_last(model, torch.device("cpu")) else torch.contiguous_format
    return model.to(memory_format=fmt), fmt


def bare_train_ips(name: str, teacher_name: str, batch: int, shape, classes: int, steps: int) -> float:
    """Images/s of bare steps on one pre-made normalised batch (bench/throughput.py's loop)."""
    model, fmt = _placed(name, shape, classes)
    teacher = _placed(teacher_name, shape, classes)[0].eval().requires_grad_(False) if teacher_name else None
    x = torch.randn(batch, *shape).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,))
    bare_train(model, teacher, x, y, 1)  # warm-up
    return bare_train(model, teacher, x, y, steps)


def bare_infer_ips(name: str, shape, classes: int, batch: int = 1024, steps: int = 3) -> float:
    model, fmt = _placed(name, shape, classes)
    x = torch.randn(batch, *shape).contiguous(memory_format=fmt)
    bare_infer(model, x, 1)
    return bare_infer(model, x, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--steps", type=int, default=8, help="batches per bare training measurement")
    args = ap.parse_args()
    overrides = list(args.overrides)
    if not any(o.startswith("out=") for o in overrides):
        overrides.append(f"out={tempfile.mkdtemp(prefix='ccfs-passes-')}")
    overrides.append("progress=false")
    cfg = load_config(args.preset, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    instrument()
    from ccfs.pipeline import run_stage

    t0 = time.perf_counter()
    run_stage("run", cfg)
    wall = time.perf_counter() - t0

    from ccfs.context import Run

    d = Run(cfg).data
    shape, k = tuple(d.train.images.shape[1:]), d.num_classes
    rows, raw_total = [], 0.0
    for (name, batch, teacher), images in sorted(TRAIN.items()):
        ips = statistics.median(bare_train_ips(name, teacher, batch, shape, k, args.steps) for _ in range(2))
        raw_total += images / ips
        rows.append((f"train {name}" + (f" (KD from {teacher})" if teacher else "") + f", batch {batch}",
                     images, ips, images / ips))
    for name, images in sorted(INFER.items()):
        ips = statistics.median(bare_infer_ips(name, shape, k) for _ in range(2))
        raw_total += images / ips
        rows.append((f"infer {name}", images, ips, images / ips))
    print(f"\n## {args.preset} {' '.join(args.overrides)}: {torch.get_num_threads()} threads\n")
    print("| pass | images | bare img/s | raw s |")
    print("|---|---|---|---|")
    for what, images, ips, secs in rows:
        print(f"| {what} | {images} | {ips:.0f} | {secs:.1f} |")
    rest = wall - SYNTH_SECONDS[0]
    print(f"\nwall time of `ccfs run`: {wall:.1f} s, of which BN-matching distillation {SYNTH_SECONDS[0]:.1f} s; "
          f"the rest, {rest:.1f} s, against the raw compute of its passes, {raw_total:.1f} s: "
          f"ratio {rest / raw_total:.2f}")
    print("time inside fit per model (s): " + ", ".join(f"{k} {v:.1f}" for k, v in FIT_SECONDS.items()))


if __name__ == "__main__":
    main()
