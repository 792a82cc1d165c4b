"""Running under `torchrun`: process-group setup, rank 0 as the one writer, and work
spread over ranks.

`torchrun --nproc_per_node=N -m ccfs STAGE PRESET ...` starts N processes that read the
same config. Rank 0 alone writes artifacts, logs and progress bars. Teacher, distill,
select and evaluate run on every rank (`pipeline.ALL_RANKS`): teacher and select's filters
train data-parallel (DDP, each rank its share of every batch) and infer a share of the
rows each; distill spreads its class batches over the ranks; `evaluate` trains independent
students on every rank at once (one student per rank, in waves of N), which is what an
evaluation with many seeds needs. Export and report run on rank 0 while the other ranks
wait. Outside torchrun (no WORLD_SIZE in the environment) every function here is a no-op
for one rank.
Backend: NCCL when the ranks use GPUs (one per rank), gloo on the CPU (`device=cpu`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from ccfs.errors import CCFSError, ConfigError

# Rank 0 may train a teacher for hours while the others wait at a barrier.
TIMEOUT = timedelta(hours=48)


class RankFailed(CCFSError):
    """Rank 0 failed; the other ranks stop with it (rank 0 prints the reason)."""


_LOCAL = [False]  # inside `local()`: this rank works alone (one student per rank)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Ranks sharing the current work (1 outside torchrun and inside `local()`)."""
    return dist.get_world_size() if _active() and not _LOCAL[0] else 1


def rank() -> int:
    return dist.get_rank() if _active() and not _LOCAL[0] else 0


def is_main() -> bool:
    """Rank 0 of the job: the one that writes artifacts and logs (also inside `local()`)."""
    return not _active() or dist.get_rank() == 0


@contextmanager
def local() -> Iterator[None]:
    """Work this rank does alone (an independent student): no collectives, no sharding."""
    old, _LOCAL[0] = _LOCAL[0], True
    try:
        yield
    finally:
        _LOCAL[0] = old


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shard(n: int) -> tuple[int, int]:
    """This rank's contiguous share [start, end) of n items (sizes differ by at most 1)."""
    return _share(n, world_size(), rank())


def gather_rows(part: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's `shard(n)` rows of a tensor, in rank order, on every rank."""
    if world_size() == 1:
        return part
    rows = -(-n // world_size())  # every share padded to the largest
    padded = part.new_zeros((rows, *part.shape[1:]))
    padded[: len(part)] = part
    out = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(out, padded.contiguous())
    sizes = [(lambda a, b: b - a)(*_share(n, world_size(), r)) for r in range(world_size())]
    return torch.cat([o[:k] for o, k in zip(out, sizes)])


def _share(n: int, w: int, r: int) -> tuple[int, int]:
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def backend_for(device: str) -> str:
    """The process-group backend for the run's `device` setting under torchrun: NCCL when the
    ranks use GPUs (auto or cuda on a machine with CUDA), gloo when they use the CPU.
    Refuses more ranks per node than the node has GPUs (each rank takes GPU LOCAL_RANK) and
    an explicit cuda:N (every rank would share one GPU), in words, on every rank at once."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "gloo"
    if device not in ("auto", "cuda"):
        raise ConfigError(f"device={device} under torchrun: every rank would use that one GPU; "
                          "use device=cuda (rank r takes GPU r of its node) or device=cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or auto")
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = torch.cuda.device_count()
    if per_node > gpus:
        raise ConfigError(f"torchrun started {per_node} processes on this node but it has {gpus} GPU(s), one per "
                          f"rank: use --nproc_per_node={gpus}, or device=cpu to run the ranks on the CPU")
    return "nccl"


def init(device: str = "auto") -> str | None:
    """Join the process group torchrun describes in the environment, with the backend that
    `device` (the config's setting) calls for; returns the line rank 0 logs first (e.g.
    "distributed: 2 ranks, gloo"), or None outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    backend = backend_for(device)
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


def on_main(fn: Callable[[], Any]) -> Any:  # noqa: C901
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


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) in place over the ranks; CPU tensors travel through the GPU under NCCL."""
    if world_size() == 1:
        return tensor
    if dist.get_backend() == "nccl" and not tensor.is_cuda:
        tensor.copy_(sum_(tensor.cuda()).cpu())
        return tensor
    dist.all_reduce(tensor)
    return tensor
