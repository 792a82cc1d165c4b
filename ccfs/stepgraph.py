"""A training step replayed as a CUDA graph, and the SGD step that can be captured in one.

A small model's training step on a GPU is a few hundred short kernels, each launched from
Python: the GPU waits on the host (issue 9 measured 5-6 ms a step for the width-32 ConvNet on
an H200, about twice two CPU threads). Captured once as a CUDA graph, the step is one launch.
What a captured step may do: read its inputs from the static buffers it was captured with
(`StepGraph` copies each call's inputs there), and change state only in place, on tensors that
live as long as the fit (parameters, the optimizer's momentum, BatchNorm statistics, running
sums of the loss); nothing synchronises with the host, and a Python number it reads is baked in
at capture. Hence `GraphSGD`: torch's SGD takes a tensor learning rate only through `.item()`,
so the epoch's rate lives in a device tensor here, changed between replays.

`StepGraph` runs its first `WARMUP` calls eagerly (on a side stream, as PyTorch's notes on
whole-network capture do: cuBLAS / cuDNN workspaces and lazy initialisation happen there), captures the next, and replays
it for every later call with the captured shapes; a call with other shapes (an epoch's short last
batch) runs eagerly on the same state. The warm-up calls are real training steps, so a graphed
fit trains exactly the steps an eager one does. On the CPU nothing is captured.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

import torch

WARMUP = 3  # eager calls before the capture (PyTorch's CUDA-graph notes use a few on a side stream)
# CCFS_CUDA_GRAPHS=1 turns capture on. Off by default until it has run on a GPU: written and
# reviewed without one, checked on the CPU only through a stand-in (tests/test_stepgraph.py);
# tests/test_cuda.py and bench/engine.py (bench/gpu_session.sh) are what make it the default.
ENV = "CCFS_CUDA_GRAPHS"
DEFAULT = "0"
_failed = False  # a capture failed in this process: later fits train eagerly without trying again


def wanted(device: torch.device) -> bool:
    """Whether steps on `device` are captured: on CUDA with CCFS_CUDA_GRAPHS=1, unless a capture
    has failed in this process."""
    return device.type == "cuda" and os.environ.get(ENV, DEFAULT) == "1" and not _failed


class CudaBackend:
    """Capture and replay with torch.cuda.CUDAGraph on one device (`cuda:N` as well as the
    current one), warm-up and capture on one side stream of it. A capture is process-wide
    ("global" mode): no other thread may launch CUDA work meanwhile, which holds in ccfs because
    lockstep selections (ccfs.api.FilterGroups) train a round's group while every other
    selection thread waits. `replays` counts replays (the benchmark's proof that a fit was
    graphed)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.stream: torch.cuda.Stream | None = None
        self.replays = 0

    def _stream(self) -> torch.cuda.Stream:
        if self.stream is None:  # one stream: each new one brings its own cuBLAS workspace
            self.stream = torch.cuda.Stream(self.device)
        return self.stream

    @contextlib.contextmanager
    def side_stream(self):
        """Warm-up calls run on the side stream, joined with the current one after."""
        with torch.cuda.device(self.device):
            stream, current = self._stream(), torch.cuda.current_stream()
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                yield
            current.wait_stream(stream)

    def capture(self, fn: Callable[[], None]):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device):
            before = torch.cuda.current_stream()
            try:
                with torch.cuda.graph(graph, stream=self._stream()):
                    fn()
            finally:  # a failed capture_end skips the context's stream restore
                torch.cuda.set_stream(before)
        return graph

    def replay(self, graph) -> None:
        with torch.cuda.device(self.device):
            graph.replay()
        self.replays += 1


_backends: dict[torch.device, CudaBackend] = {}


def cuda_backend(device: torch.device) -> CudaBackend:
    """The process's backend for `device` (its one side stream serves every fit)."""
    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _backends.setdefault(device, CudaBackend(device))


class StepGraph:
    """`step(*inputs)` (tensors or None), captured once and replayed (see the module's notes).
    `backend` captures (the device's CudaBackend by default; tests give one that replays in
    Python). If the capture fails, the fit goes on eagerly, and so does every later fit of the
    process, with a one-line note: a graph saves time, never changes what is trained."""

    def __init__(self, step: Callable[..., None], *, enabled: bool, device: torch.device | None = None,
                 backend=None, warmup: int = WARMUP, name: str = "train"):
        self.step, self.enabled, self.warmup, self.name = step, enabled, warmup, name
        self.backend = backend if backend is not None or not enabled else cuda_backend(device)
        self.graph = None
        self.shapes: tuple | None = None  # the input shapes of the first call: what is captured
        self.static: list[torch.Tensor | None] = []
        self.calls = 0  # eager calls with the captured shapes so far
        self.replays = 0

    def __call__(self, *inputs: torch.Tensor | None) -> None:
        shapes = _shapes(inputs)
        if self.shapes is None:
            self.shapes = shapes
        if not self.enabled or shapes != self.shapes:
            self.step(*inputs)
            return
        if self.graph is None:
            if self.calls < self.warmup:
                self.calls += 1
                with self.backend.side_stream():
                    self.step(*inputs)
                return
            if not self._capture(inputs):
                self.step(*inputs)
                return
        for buf, x in zip(self.static, inputs):
            if buf is not None:
                buf.copy_(x, non_blocking=True)
        self.backend.replay(self.graph)
        self.replays += 1

    def close(self) -> None:
        """Free the graph, its memory pool and the static inputs (a fit's end)."""
        self.graph, self.static, self.step = None, [], None

    def _capture(self, inputs: Sequence[torch.Tensor | None]) -> bool:
        global _failed
        self.static = [None if x is None else x.clone() for x in inputs]
        try:
            self.graph = self.backend.capture(lambda: self.step(*self.static))
        except Exception as e:  # noqa: BLE001 - any failure means the same: train eagerly
            cause = e.__context__ or e  # a failed capture_end hides the error that broke the capture
            print(f"{self.name}: CUDA graph capture failed ({type(cause).__name__}: "
                  f"{(str(cause).splitlines() or [''])[0][:120]}); training eagerly from here on "
                  f"(unset CCFS_CUDA_GRAPHS to skip the attempt)")
            _failed = True
            self.enabled, self.graph, self.static = False, None, []
            return False
        return True


def _shapes(inputs) -> tuple:
    return tuple(None if x is None else (tuple(x.shape), x.dtype) for x in inputs)


class GraphSGD:
    """SGD with momentum and weight decay as torch.optim.SGD computes it (dampening 0, not
    Nesterov), over `opt`'s parameters and in its state (so its state_dict, and a resume file,
    are the same), with the learning rate in a device tensor: a capturable step. A momentum
    buffer starts at zero, which gives torch's first step exactly (0.9·0 + d = d)."""

    def __init__(self, opt: torch.optim.SGD, device: torch.device):
        (group,) = opt.param_groups
        self.params = list(group["params"])
        self.momentum, self.weight_decay = group["momentum"], group["weight_decay"]
        if group["nesterov"] or group["dampening"] or group.get("maximize"):
            raise ValueError("GraphSGD does plain momentum SGD only")
        for p in self.params:
            state = opt.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.bufs = [opt.state[p]["momentum_buffer"] for p in self.params]
        self.neg_lr = torch.full((), -float(group["lr"]), device=device)

    def set_lr(self, lr: float) -> None:
        self.neg_lr.fill_(-lr)

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient (as torch's SGD skips the others)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params, bufs = [self.params[i] for i in live], [self.bufs[i] for i in live]
        grads = [p.grad for p in params]
        d = torch._foreach_add(grads, params, alpha=self.weight_decay) if self.weight_decay else grads
        torch._foreach_mul_(bufs, self.momentum)
        torch._foreach_add_(bufs, d)
        torch._foreach_add_(params, torch._foreach_mul(bufs, self.neg_lr))
