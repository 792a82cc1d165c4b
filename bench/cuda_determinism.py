"""What repeatability costs on CUDA: the same seed trained twice with the default kernels
and twice with deterministic ones (`deterministic: true`, the default), for a teacher-like
run (convnet_w32_bn, cross-entropy, batch 256) and a KD student (convnet_w32, batch 32, the
student recipe's augmentation). Prints seconds per run and the largest weight difference
between the two runs of each mode (0 = bit-identical).

    python bench/cuda_determinism.py [--root FASHION_MNIST_FOLDER]

Needs CUDA; without it the script says so and exits 1.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts, for both modes

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None)
    ap.add_argument("--images", type=int, default=10000)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/cuda_determinism.py needs CUDA; none is available here")
    from ccfs.config import Recipe
    from ccfs.device import set_cuda_determinism
    from ccfs.data.cache import load_dataset
    from ccfs.models import create_model
    from ccfs.objectives import KD, CrossEntropy
    from ccfs.train import fit

    d = load_dataset("fashion-mnist", args.root)
    train, small = d.train.subset(range(args.images)), d.train.subset(range(500))
    device = torch.device("cuda")

    def teacher_run():
        torch.manual_seed(0)
        m = create_model("convnet_w32_bn", 10, 1, 28)
        fit(m, train, Recipe(epochs=3, batch_size=256, lr=0.05), CrossEntropy(), mean=d.mean, std=d.std,
            device=device, seed=0, progress=False)
        return m

    def student_run(teacher):
        torch.manual_seed(1)
        m = create_model("convnet_w32", 10, 1, 28)
        fit(m, small, Recipe(steps=600, batch_size=32, lr=0.05, rrc_min_scale=0.5, temperature=4.0),
            KD(teacher, 4.0), mean=d.mean, std=d.std, device=device, seed=1, progress=False)
        return m

    def diff(a, b):
        return max((x.float() - y.float()).abs().max().item() for x, y in zip(a.state_dict().values(),
                                                                               b.state_dict().values()))

    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; Fashion-MNIST; AMP and channels-last on")
    print("| kernels | teacher-like run s (×2) | teacher max weight diff | KD student s (×2) | student max weight diff |")
    print("|---|---|---|---|---|")
    teacher_run()  # warm-up: CUDA context, cuDNN handles
    for mode in (False, True):
        set_cuda_determinism(mode)
        runs, secs = [], []
        for _ in range(2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            runs.append(teacher_run())
            torch.cuda.synchronize()
            secs.append(time.perf_counter() - t0)
        teacher = runs[0].eval().requires_grad_(False)
        students, ssecs = [], []
        for _ in range(2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            students.append(student_run(teacher))
            torch.cuda.synchronize()
            ssecs.append(time.perf_counter() - t0)
        print(f"| {'deterministic' if mode else 'default'} | {secs[0]:.1f}, {secs[1]:.1f} | {diff(*runs):.2e} | "
              f"{ssecs[0]:.1f}, {ssecs[1]:.1f} | {diff(*students):.2e} |")


if __name__ == "__main__":
    main()
