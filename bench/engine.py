"""Student-steps per second of the one training loop: one student at a time (`fit`) against
groups of G students trained as one stacked model (`fit_group`), KD from a teacher, on the
CPU or a GPU; on CUDA each with eager steps and with the step replayed as a CUDA graph
(ccfs.stepgraph; --graph both|on|off, default both on CUDA, off on the CPU, which has none).

    python bench/engine.py [--device cpu|cuda] [--model convnet_w32] [--batch 32]
                           [--groups 1,8,32,128] [--graph both] [--steps 300] [--root FMNIST] [--json FILE]

Each configuration trains its G students for about --steps optimizer steps each on sets of
--batch × 17 images (Fashion-MNIST rows if --root or the dataset table's folder has them,
else random images) and reports the wall time per student-step (the group's wall time over
G × steps) and the ratio to one eager student (the first row), after one untimed warm-up epoch. With --json the rows are
appended as JSON lines, with the device's name, the date and the commit.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import time
from dataclasses import replace
from datetime import date

import torch


def _data(root, size, channels, n):
    from ccfs.data.datasets import Split

    try:
        from ccfs.data.cache import load_dataset

        d = load_dataset("fashion-mnist", root)
        if (d.channels, d.image_size) == (channels, size):
            return d.train.subset(range(n)), "Fashion-MNIST"
    except Exception:  # noqa: BLE001 - no data here: random images of the shape
        pass
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (n,), generator=g)), "random images"


def measure(model: str, batch: int, group: int, steps: int, device: torch.device, root, size: int,
            channels: int, graph: bool = False) -> dict:
    from ccfs.config import STUDENT_RECIPE
    from ccfs.models import create_model
    from ccfs.objectives import make_objective
    from ccfs import train

    n = batch * 17
    data, source = _data(root, size, channels, n)
    teacher = create_model("convnet_w32_bn", 10, channels, size)
    epochs = max(1, math.ceil(steps / 17))
    recipe = replace(STUDENT_RECIPE, steps=0, epochs=epochs, batch_size=batch, warmup_epochs=0)

    from ccfs import stepgraph

    if graph:
        os.environ[stepgraph.ENV] = "1"  # capture on (off by default until it has run on a GPU)
    backend = stepgraph.CudaBackend(device) if graph and stepgraph.wanted(device) else None

    def run(ep):
        torch.manual_seed(0)
        models = [create_model(model, 10, channels, size) for _ in range(group)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        common = dict(mean=(0.2861,), std=(0.3530,), device=device, progress=False, graph=graph, backend=backend)
        objective, r = make_objective("kd", teacher, 4.0), replace(recipe, epochs=ep)
        if group == 1:  # the single-model loop itself (also what an older ccfs has, for a before/after ratio)
            train.fit(models[0], data, r, objective, seed=0, **common)
        else:
            train.fit_group(models, [data] * group, r, objective, seeds=list(range(group)), **common)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    run(1)  # warm-up: allocator, cuDNN plans, first-call costs
    wall = run(epochs)
    return {"model": model, "batch": batch, "group": group, "graphed": backend is not None and backend.replays > 0,
            "steps": epochs * 17,
            "ms_per_student_step": 1000 * wall / (group * epochs * 17), "wall_s": wall, "data": source,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="convnet_w32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=28, help="image size (32 for resnet18_modified's CIFAR shape)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--groups", default="1,8,32,128")
    ap.add_argument("--graph", choices=["both", "on", "off"], default=None,
                    help="eager steps, CUDA-graph steps or both (default: both on CUDA, off elsewhere)")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per student (rounded up to epochs of 17)")
    ap.add_argument("--root", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    print(f"{name}; {args.model}, batch {args.batch}, KD; torch {torch.__version__}; commit {commit}")
    graphs = {"both": [False, True], "on": [True], "off": [False]}[args.graph or ("both" if device.type == "cuda" else "off")]
    print("| group | graphed | ms per student-step | student-steps/s | vs one eager student |\n|---|---|---|---|---|")
    for g, graph in [(g, graph) for g in map(int, args.groups.split(",")) for graph in graphs]:
        r = measure(args.model, args.batch, g, args.steps, device, args.root, args.size, args.channels, graph)
        r.update(device=name, date=str(date.today()), commit=commit)
        rows.append(r)
        base = rows[0]["ms_per_student_step"]
        print(f"| {g} | {'yes' if r['graphed'] else 'no'} | {r['ms_per_student_step']:.2f} | {1000 / r['ms_per_student_step']:.0f} | "
              f"{base / r['ms_per_student_step']:.2f}x |", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
