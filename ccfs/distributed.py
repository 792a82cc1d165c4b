"""Running under `torchrun`: process-group setup, rank 0 as the one writer, and work
spread over ranks.

`torchrun --nproc_per_node=N -m ccfs STAGE PRESET ...` starts N processes that read the
same config. Rank 0 alone writes artifacts, logs and progress bars; the stages that build
one artifact (teacher, distill, select, export, report) run on rank 0 while the other
ranks wait, and `evaluate` trains independent students on every rank at once (one student
per rank, in waves of N), which is what an evaluation with many seeds needs. Outside
torchrun (no WORLD_SIZE in the environment) every function here is a no-op for one rank.
Backend: NCCL on CUDA, gloo on the CPU.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from ccfs.errors import CCFSError

# Rank 0 may train a teacher for hours while the others wait at a barrier.
TIMEOUT = timedelta(hours=48)


class RankFailed(CCFSError):
    """Rank 0 failed; the other ranks stop with it (rank 0 prints the reason)."""


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init() -> str | None:
    """Join the process group torchrun describes in the environment; returns the line
    rank 0 logs first (e.g. "distributed: 2 ranks, gloo"), or None outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=TIMEOUT)
    return f"distributed: {world_size()} ranks, {backend}"


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_name(name: str) -> str:
    """`auto` / `cuda` under torchrun: this rank's GPU."""
    if world_size() > 1 and torch.cuda.is_available() and name in ("auto", "cuda"):
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return name


def _broadcast(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0 only, then let every rank go on; if it fails there, every rank
    stops (rank 0 re-raises the error itself, the others raise RankFailed)."""
    if world_size() == 1:
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the others are told
            error = e
    failed = _broadcast(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if failed is not None:
        raise RankFailed(f"rank 0 failed ({failed})")
    return _broadcast(result)


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
