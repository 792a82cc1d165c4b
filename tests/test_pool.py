"""AvgPool2x2 gives torch's AvgPool2d(2, 2) bit for bit, forward and backward."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccfs.models import create_model
from ccfs.models.pool import AvgPool2x2


@pytest.mark.parametrize("shape", [(3, 4, 28, 28), (2, 5, 7, 7), (1, 3, 6, 9), (4, 1, 2, 3)])
def test_forward_and_backward_match_torch_bit_for_bit(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 1e3  # large values: a different order of sums would show
    grad = torch.randn(*shape[:2], shape[2] // 2, shape[3] // 2, generator=g)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = F.avg_pool2d(a, 2, 2), AvgPool2x2()(b)
    assert torch.equal(ya, yb)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.equal(a.grad, b.grad)


def test_channels_last_and_state_dict_are_torchs():
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    assert torch.equal(AvgPool2x2()(x), F.avg_pool2d(x, 2, 2))
    assert isinstance(AvgPool2x2(), nn.AvgPool2d) and not AvgPool2x2().state_dict()


def test_convnet_uses_it_and_trains_as_with_torchs_pooling():
    torch.manual_seed(0)
    fast = create_model("convnet_w32", 10, 1, 28)
    assert any(isinstance(m, AvgPool2x2) for m in fast.modules())
    slow = create_model("convnet_w32", 10, 1, 28)
    slow.load_state_dict(fast.state_dict())
    for i, m in enumerate(slow.features):
        if isinstance(m, nn.AvgPool2d):
            slow.features[i] = nn.AvgPool2d(2, 2)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for model in (fast, slow):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for p, q in zip(fast.parameters(), slow.parameters()):
        assert torch.equal(p, q)
