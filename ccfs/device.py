"""The torch device a `device` setting names, and CUDA's deterministic kernels."""
from __future__ import annotations

import os

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
