"""The CUDA-graph step (ccfs.stepgraph) on the CPU: the capturable SGD against torch's, and the
graph's plumbing (warm-up, static buffers, the short last batch, a failed capture) through a
stand-in backend whose "graph" replays the captured call in Python. The capture itself runs
on CUDA only (tests/test_cuda.py)."""
from __future__ import annotations

import contextlib
import gc
import weakref

import pytest
import torch

from ccfs import stepgraph
from ccfs.objectives import KD, CrossEntropy
from ccfs.train import fit, fit_group
from tests.test_train import MEAN, STD, tiny_net, tiny_recipe, tiny_split


class PythonReplay:
    """A capture that records the call and replays it by calling it again: what a CUDA graph
    does, as long as the step reads its inputs only from the static buffers and keeps its
    state in place (which is what these tests check through the results)."""

    def __init__(self, fail: bool = False):
        self.fail, self.captures, self.warm = fail, 0, 0

    @contextlib.contextmanager
    def side_stream(self):
        self.warm += 1
        yield

    def capture(self, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        self.captures += 1
        return fn

    def replay(self, graph):
        graph()


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    monkeypatch.setattr(stepgraph, "wanted", lambda device: True)
    monkeypatch.setattr(stepgraph, "_failed", False)


def test_graph_sgd_is_torchs_sgd_with_the_lr_in_a_tensor():
    """Momentum 0.9, weight decay, an lr changed between steps: the same weights and momentum
    as torch.optim.SGD to float rounding (the update is -lr·buf as a product, then a sum,
    where torch fuses them)."""
    torch.manual_seed(0)
    a = [torch.randn(5, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    b = [t.detach().clone().requires_grad_(True) for t in a]
    ta = torch.optim.SGD(a, lr=0.1, momentum=0.9, weight_decay=5e-4)
    tb = torch.optim.SGD(b, lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = stepgraph.GraphSGD(tb, torch.device("cpu"))
    for i, lr in enumerate([0.1, 0.1, 0.05, 0.01, 0.2]):
        ta.param_groups[0]["lr"] = lr
        g.set_lr(lr)
        grads = [torch.randn_like(t) for t in a]
        for p, q, d in zip(a, b, grads):
            p.grad, q.grad = d.clone(), d.clone()
        ta.step()
        g.step()
        for p, q in zip(a, b):
            assert torch.allclose(p, q, rtol=0, atol=1e-6), i
            assert torch.allclose(ta.state[p]["momentum_buffer"], tb.state[q]["momentum_buffer"], atol=1e-6)


def test_graph_sgd_refuses_what_it_does_not_compute():
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="plain momentum"):
        stepgraph.GraphSGD(opt, torch.device("cpu"))


def test_a_step_graph_warms_up_captures_once_and_replays_from_static_buffers():
    seen = []
    total = torch.zeros(())

    def step(x, y):
        seen.append(x.data_ptr())
        total.add_(x.sum() + (0 if y is None else y.sum()))

    backend = PythonReplay()
    sg = stepgraph.StepGraph(step, enabled=True, backend=backend, warmup=2)
    xs = [torch.full((3,), float(i)) for i in range(6)]
    for x in xs:
        sg(x, None)
    sg(torch.ones(2), None)  # another shape: eager, on the same state
    assert backend.warm == 2 and backend.captures == 1 and sg.replays == 4
    assert total.item() == 3 * sum(range(6)) + 2  # every call counted once, with its own input
    assert len(set(seen[2:6])) == 1 and seen[-1] != seen[2]  # replays read one static buffer; the odd call its own


def test_a_disabled_step_graph_is_the_step_itself():
    calls = []
    sg = stepgraph.StepGraph(lambda x: calls.append(x), enabled=False)
    sg(torch.zeros(1))
    assert len(calls) == 1 and sg.backend is None and sg.replays == 0


def test_graphs_are_for_cuda_and_off_until_asked_for(monkeypatch):
    """Off by default until the capture has run on a GPU (tests/test_cuda.py)."""
    monkeypatch.setattr(stepgraph, "_failed", False)
    monkeypatch.delenv(stepgraph.ENV, raising=False)
    assert not stepgraph.wanted(torch.device("cuda"))
    monkeypatch.setenv(stepgraph.ENV, "1")
    assert stepgraph.wanted(torch.device("cuda")) and not stepgraph.wanted(torch.device("cpu"))
    monkeypatch.setattr(stepgraph, "_failed", True)
    assert not stepgraph.wanted(torch.device("cuda"))


@pytest.mark.parametrize("objective", ["kd", "ce"])
def test_a_graphed_fit_trains_what_an_eager_fit_trains(graphs_on_cpu, objective):
    """22 images at batch 8: two full steps and a short last one an epoch, 4 epochs, so the
    warm-up, the capture, the replays and eager last batches all touch one state. Weights,
    BatchNorm statistics, losses and accuracy match the eager fit to float rounding (GraphSGD's
    update; tolerance 1e-5)."""
    def obj():
        return KD(tiny_net(9), temperature=4.0) if objective == "kd" else CrossEntropy()

    data, test = tiny_split(22, 1), tiny_split(12, 2)
    eager, graphed = tiny_net(1), tiny_net(1)
    he = fit(eager, data, tiny_recipe(epochs=4), obj(), mean=MEAN, std=STD, seed=3, test=test, progress=False,
             graph=False)
    backend = PythonReplay()
    hg = fit(graphed, data, tiny_recipe(epochs=4), obj(), mean=MEAN, std=STD, seed=3, test=test, progress=False,
             backend=backend)
    assert backend.captures == 1 and backend.warm == 3  # 8 full steps: 3 warm-up, then 5 from the graph
    se, sg = eager.state_dict(), graphed.state_dict()
    for k in se:
        assert torch.allclose(se[k].float(), sg[k].float(), atol=1e-5), k
    assert hg.train_loss == pytest.approx(he.train_loss, abs=1e-5)
    assert hg.train_acc == pytest.approx(he.train_acc) and hg.test_acc == pytest.approx(he.test_acc)


def test_a_graphed_group_trains_what_an_eager_group_trains(graphs_on_cpu):
    sets, seeds = [tiny_split(22, s) for s in (1, 2)], [5, 6]
    eager, graphed = [tiny_net(1), tiny_net(2)], [tiny_net(1), tiny_net(2)]
    he = fit_group(eager, sets, tiny_recipe(), CrossEntropy(), mean=MEAN, std=STD, seeds=seeds, progress=False,
                   graph=False)
    backend = PythonReplay()
    hg = fit_group(graphed, sets, tiny_recipe(), CrossEntropy(), mean=MEAN, std=STD, seeds=seeds, progress=False,
                   backend=backend)
    assert backend.captures == 1
    for a, b, ha, hb in zip(eager, graphed, he, hg):
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-5), k
        assert hb.train_loss == pytest.approx(ha.train_loss, abs=1e-5)


def test_what_cannot_be_captured_trains_eagerly(graphs_on_cpu, capsys):
    """A mix (Python numbers per step), a hook (reads every step's logits) and a failed capture
    train eagerly: no capture, or a one-line note and the eager result."""
    teacher = KD(tiny_net(9), temperature=4.0)
    for kw in (dict(recipe=tiny_recipe(mix="cutmix"), objective=teacher),
               dict(recipe=tiny_recipe(), objective=CrossEntropy(), hook=lambda *a: None)):
        backend = PythonReplay()
        fit(tiny_net(1), tiny_split(), kw.pop("recipe"), kw.pop("objective"), mean=MEAN, std=STD, progress=False,
            backend=backend, **kw)
        assert backend.captures == 0 and backend.warm == 0
    eager, failed = tiny_net(1), tiny_net(1)
    fit(eager, tiny_split(), tiny_recipe(), CrossEntropy(), mean=MEAN, std=STD, seed=3, progress=False, graph=False)
    fit(failed, tiny_split(), tiny_recipe(), CrossEntropy(), mean=MEAN, std=STD, seed=3, progress=False,
        backend=PythonReplay(fail=True))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "CUDA graph capture failed (RuntimeError: operation not permitted" in out[0]
    assert stepgraph._failed  # later fits of the process do not try again
    for k, v in eager.state_dict().items():
        assert torch.allclose(v.float(), failed.state_dict()[k].float(), atol=1e-5), k


def test_a_fit_frees_its_graph_when_it_ends(graphs_on_cpu):
    """The step refers back to the fit's state (a reference cycle): the fit breaks it on the way
    out, so a graph's memory pool goes with its fit, not at some later cyclic collection."""
    class Keeping(PythonReplay):
        def capture(self, fn):
            self.ref = weakref.ref(fn)
            return super().capture(fn)

    backend = Keeping()
    gc.disable()
    try:
        fit(tiny_net(1), tiny_split(), tiny_recipe(), CrossEntropy(), mean=MEAN, std=STD, progress=False,
            backend=backend)
        assert backend.captures == 1 and backend.ref() is None
    finally:
        gc.enable()


class Interrupted(Exception):
    pass


def resumed_against_whole(monkeypatch, tmp_path, backend, make_net, data, recipe, **fit_kw):
    """A graphed fit killed after epoch 2's checkpoint and run again, beside one that was not:
    (resumed model, its History, whole model, its History). `make_net(seed)` builds the model;
    the resumed one starts from other weights (all must come from the checkpoint), warms up and
    captures again, its momentum from the checkpoint in GraphSGD. `backend()` makes a backend."""
    from ccfs import train

    save = train._save_resume

    def save_then_stop(path, epoch, *a, **k):
        save(path, epoch, *a, **k)
        if epoch == 2:
            raise Interrupted

    def run(net, resume=None):
        return fit(net, data, recipe, CrossEntropy(), seed=3, progress=False, resume=resume, backend=backend(),
                   **fit_kw)

    whole = make_net(1)
    h_whole = run(whole)
    ckpt = tmp_path / "resume.pt"
    monkeypatch.setattr(train, "_save_resume", save_then_stop)
    with pytest.raises(Interrupted):
        run(make_net(1), ckpt)
    monkeypatch.setattr(train, "_save_resume", save)
    resumed = make_net(99)
    return resumed, run(resumed, ckpt), whole, h_whole


def test_a_graphed_fit_resumes_where_it_stopped(graphs_on_cpu, monkeypatch, tmp_path):
    resumed, h_res, whole, h_whole = resumed_against_whole(
        monkeypatch, tmp_path, PythonReplay, tiny_net, tiny_split(22, 1), tiny_recipe(epochs=4), mean=MEAN, std=STD)
    assert h_res.train_loss == h_whole.train_loss
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
