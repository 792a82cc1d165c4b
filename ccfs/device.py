"""The torch device a `device` setting names, and CUDA's deterministic kernels."""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

from ccfs.errors import ConfigError


def resolve_device(name: str, deterministic: bool = True) -> torch.device:
    """The torch device for a `device` setting (`auto`, `cpu`, `cuda`, `cuda:N`); on CUDA,
    also the kernels' determinism."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or auto")
    if name.startswith("cuda"):
        set_cuda_determinism(deterministic)
    return torch.device(name)


def set_cuda_determinism(on: bool) -> None:
    """Deterministic cuDNN and cuBLAS kernels (process-wide). CPU kernels are deterministic
    already; on CUDA the default convolution backward and cuBLAS's split-K reductions are not,
    and two runs of one seed drift apart. warn_only: an op with no deterministic kernel warns
    and runs. cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it starts, so this runs before any
    CUDA work. Its cost, measured: bench/results/gpu_h200.md."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


GROUP_CAP = 64  # the automatic group's largest size: `bench/gpu_session.sh` measures 8, 32 and 128


def group_size(setting: int, device: torch.device, member_bytes: Callable[[], int]) -> int:
    """How many models to train at once as one stacked model (`eval.group`): the setting where
    it is not 0; automatically one on the CPU (six stacked ConvNet students trained at 0.83x
    the speed of one after another on 2 cores, four at 0.91x: the CPU is compute-bound,
    nothing to gain) and on CUDA as many as a quarter of the free memory holds at
    `member_bytes()` each, at most GROUP_CAP (a small model's step is bound by kernel
    launches there, which a group shares)."""
    if setting > 0:
        return setting
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(GROUP_CAP, free // 4 // max(1, member_bytes())))
