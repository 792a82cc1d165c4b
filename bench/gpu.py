"""The same workloads as bench/distributed.py on one or more GPUs, with AMP and
channels-last on and off: what only a GPU shows.

    python bench/gpu.py [--images 60000] [--model convnet_w32_bn]          # one GPU
    torchrun --nproc_per_node=N bench/gpu.py                                # N GPUs, NCCL

For each setting (amp × channels_last): train images/s of one teacher epoch (CE, batch 256,
the difficulty recorder on), inference images/s of a coarse pass, and seconds per KD student
(500 images, 10 epochs); peak GPU memory. Then `train.compile` for that KD student with AMP and
channels-last: eager, compiled cold (first compile of the process), compiled warm. Data:
Fashion-MNIST if its files are present, else random uint8 images of the same shape (say which
in the output). Needs CUDA; on a
machine without it the script says so and exits 1.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--model", default="convnet_w32_bn")
    ap.add_argument("--student", default="convnet_w32")
    ap.add_argument("--root", default=None, help="Fashion-MNIST folder (default: the dataset table's)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs CUDA; none is available here")
    from ccfs import distributed
    from ccfs.config import Recipe
    from ccfs.data.datasets import Split
    from ccfs.models import create_model
    from ccfs.objectives import CrossEntropy
    from ccfs.teacher.difficulty import DynamicsRecorder
    from ccfs.train import fit, predict_logits

    line = distributed.init("cuda")
    device = torch.device(distributed.device_name("cuda"))
    try:
        from ccfs.data.cache import load_dataset

        d = load_dataset("fashion-mnist", args.root)
        train, test, mean, std, source = d.train.subset(range(args.images)), d.test, d.mean, d.std, "Fashion-MNIST"
    except Exception:  # noqa: BLE001 - any missing data: fall back to random images
        g = torch.Generator().manual_seed(0)
        train = Split(torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (args.images,), generator=g))
        test, mean, std, source = train.subset(range(10000)), (0.5,), (0.25,), "random uint8 images"
    rows = []
    cl = True  # channels-last: always on CUDA (ccfs.train.use_channels_last)
    for amp in (False, True):
        torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(0)
        model = create_model(args.model, 10, train.images.shape[1], train.images.shape[-1])
        recipe = Recipe(epochs=1, batch_size=256, augment="crop", crop_pad=2, amp=amp)
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fit(model, train, recipe, CrossEntropy(), mean=mean, std=std, device=device,
            hook=DynamicsRecorder(len(train), 1), progress=False)
        torch.cuda.synchronize(device)
        train_ips = len(train) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        predict_logits(model, train.images, mean, std, device=device, amp=amp)
        torch.cuda.synchronize(device)
        infer_ips = len(train) / (time.perf_counter() - t0)
        teacher = model.eval().requires_grad_(False)
        student_recipe = Recipe(epochs=10, batch_size=0, lr=0.02, amp=amp)
        student_s = kd_student_seconds(args.student, teacher, train, test, student_recipe, mean, std, device)
        rows.append((amp, cl, train_ips, infer_ips, student_s, torch.cuda.max_memory_allocated(device) / 2**20))
    # train.compile on the fastest setting: the first student compiles cold, the second warm
    compiled = [kd_student_seconds(args.student, teacher, train, test, replace(student_recipe, compile=on), mean, std,
                                   device) for on in (False, True, True)]
    if distributed.is_main():
        print(f"{torch.cuda.get_device_name(device)}; {line or '1 process'}; {source}; teacher {args.model}, "
              f"{args.images} images; student {args.student}")
        print("| amp | channels_last | teacher epoch img/s | coarse pass img/s | KD student s | peak MiB |")
        print("|---|---|---|---|---|---|")
        for amp, cl, a, b, c, m in rows:
            print(f"| {amp} | {cl} | {a:.0f} | {b:.0f} | {c:.1f} | {m:.0f} |")
        print(f"\ntrain.compile (amp, channels_last): KD student eager {compiled[0]:.1f} s, compiled "
              f"{compiled[1]:.1f} s (cold), {compiled[2]:.1f} s (warm)")
    distributed.shutdown()


def kd_student_seconds(arch, teacher, train, test, recipe, mean, std, device) -> float:
    """Seconds of one KD student on the first 500 train images (seeded), on this rank alone."""
    from ccfs import distributed
    from ccfs.models import create_model
    from ccfs.objectives import KD
    from ccfs.train import fit

    with distributed.local():
        torch.manual_seed(1)
        t0 = time.perf_counter()
        fit(create_model(arch, 10, train.images.shape[1], train.images.shape[-1]), train.subset(range(500)),
            recipe, KD(teacher, 20.0), mean=mean, std=std, device=device, test=test, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0


if __name__ == "__main__":
    main()
