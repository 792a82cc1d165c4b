"""The model registry, the forward contract of every model, and checkpoint I/O."""
import argparse

import pytest
import torch
from torch import nn

from ccfs.errors import CheckpointError, ConfigError
from ccfs.models import MODELS, batchnorm_layers, create_model, has_batchnorm, load_checkpoint, save_checkpoint

SHAPES = [(1, 28), (3, 32)]  # (channels, px)


def _make(name, num_classes=10, channels=3, size=32, seed=0):
    torch.manual_seed(seed)
    return create_model(name, num_classes, channels, size).eval()


@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_contract(name, channels, size):
    model = _make(name, 7, channels, size)
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        y = model(x)
        f = model.forward_features(x)
        assert torch.equal(model.forward_head(f), y)
    assert y.shape == (2, 7) and model.num_classes == 7
    assert f.shape == (2, model.num_features)


@pytest.mark.parametrize("name", list(MODELS))
def test_channels_last_and_autocast(name):
    model = _make(name, 10, 1, 28)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        y = model(x)
        y_cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_amp = model(x)
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)
    assert y_amp.shape == (2, 10) and torch.isfinite(y_amp).all()


def test_registry_names_and_unknown_name():
    required = {"convnet", "convnet_bn", "convnet_w32", "convnet_w32_bn", "convnet_w64",
                "convnet_w64_bn", "resnet18_modified", "vgg11_bn", "mobilenetv2"}
    assert required <= set(MODELS)
    with pytest.raises(ConfigError, match="resnet18_modified") as err:
        create_model("resnet50", 10, 3, 32)
    assert "convnet_w32_bn" in str(err.value)


def test_convnet_variants():
    # Published DC ConvNet on 32 px: 3 blocks, width 128, 4x4 map -> 2048 features.
    assert _make("convnet").num_features == 128 * 4 * 4
    assert _make("convnet", channels=1, size=28).num_features == 128 * 3 * 3  # 28->14->7->3
    assert _make("convnet_w32", size=64).num_features == 32 * 8 * 8
    norms = {type(m) for m in _make("convnet").modules()}
    assert nn.GroupNorm in norms and nn.BatchNorm2d not in norms
    gn = next(m for m in _make("convnet").modules() if isinstance(m, nn.GroupNorm))
    assert gn.num_groups == gn.num_channels == 128 and gn.affine
    assert not has_batchnorm(_make("convnet")) and has_batchnorm(_make("convnet_bn"))
    assert has_batchnorm(_make("resnet18_modified")) and has_batchnorm(_make("mobilenetv2"))


def test_batchnorm_layers_are_those_with_running_stats():
    model = _make("convnet_bn")
    assert batchnorm_layers(model) == [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batchnorm_layers(model)) == 3 and batchnorm_layers(_make("convnet")) == []
    no_stats = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with_1d = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    assert batchnorm_layers(no_stats) == [] and not has_batchnorm(no_stats)
    assert batchnorm_layers(with_1d) == [with_1d[1]] and has_batchnorm(with_1d)


def test_torchvision_init():
    vgg, mobile, resnet = _make("vgg11_bn"), _make("mobilenetv2"), _make("resnet18_modified")
    for model in (vgg, mobile):
        assert abs(model.classifier.weight.std().item() - 0.01) < 0.002
        assert not model.classifier.bias.any()
    assert not any(m.bias.any() for m in vgg.modules() if isinstance(m, nn.Conv2d))
    assert resnet.fc.bias.any()  # ResNet keeps PyTorch's default Linear init
    for model in (vgg, mobile, resnet):
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(bn.weight.eq(1).all() and not bn.bias.any() for bn in bns)
    conv = mobile.features[-1][0]  # 1x1 conv 320 -> 1280: Kaiming normal, fan_out = 1280
    assert abs(conv.weight.std().item() - (2 / 1280) ** 0.5) < 0.002


def _torchvision_resnet18_keys():
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}."
            keys += [p + "conv1.weight"] + [p + f"bn1.{s}" for s in bn]
            keys += [p + "conv2.weight"] + [p + f"bn2.{s}" for s in bn]
            if layer > 1 and block == 0:
                keys += [p + "downsample.0.weight"] + [p + f"downsample.1.{s}" for s in bn]
    return keys + ["fc.weight", "fc.bias"]


def test_resnet18_modified_matches_torchvision_names():
    model = _make("resnet18_modified")
    sd = model.state_dict()
    assert list(sd) == _torchvision_resnet18_keys()
    assert sd["conv1.weight"].shape == (64, 3, 3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sd["fc.weight"].shape == (10, 512)
    # The well-known CIFAR ResNet-18 size (10 classes).
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


# ---------------------------------------------------------------- checkpoints

def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip(tmp_path):
    src = _make("convnet_w32_bn", 10, 1, 28, seed=1)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(src, path, "convnet_w32_bn", 10, in_channels=1, image_size=28)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["model.pt"]  # no temporary left
    obj = torch.load(path, weights_only=True)
    assert (obj["arch"], obj["num_classes"], obj["in_channels"], obj["image_size"]) == \
        ("convnet_w32_bn", 10, 1, 28)
    dst = _make("convnet_w32_bn", 10, 1, 28, seed=2)
    assert load_checkpoint(dst, path, "convnet_w32_bn") is dst
    _assert_same_weights(src, dst)


@pytest.mark.parametrize("wrap", ["model", "state_dict_module", "compiled", "namespace"])
def test_load_published_teacher_layouts(tmp_path, wrap):
    src = _make("resnet18_modified", seed=1)
    sd = src.state_dict()
    obj = {
        "model": {"model": sd},
        "state_dict_module": {"state_dict": {"module." + k: v for k, v in sd.items()}},
        "compiled": {"module._orig_mod." + k: v for k, v in sd.items()},
        "namespace": {"model": sd, "epoch": 3, "args": argparse.Namespace(lr=0.1)},
    }[wrap]
    torch.save(obj, tmp_path / "teacher.pth")
    dst = _make("resnet18_modified", seed=2)
    load_checkpoint(dst, tmp_path / "teacher.pth", "resnet18_modified")
    _assert_same_weights(src, dst)


def test_wrong_arch_names_both(tmp_path):
    save_checkpoint(_make("convnet_w32"), tmp_path / "m.pt", "convnet_w32", 10, in_channels=3, image_size=32)
    with pytest.raises(CheckpointError, match="convnet_w32.*convnet_w64"):
        load_checkpoint(_make("convnet_w64"), tmp_path / "m.pt", "convnet_w64")


def test_wrong_class_count(tmp_path):
    save_checkpoint(_make("convnet_w32", 100), tmp_path / "m.pt", "convnet_w32", 100, in_channels=3, image_size=32)
    with pytest.raises(CheckpointError, match="100 classes, the dataset has 10"):
        load_checkpoint(_make("convnet_w32", 10), tmp_path / "m.pt", "convnet_w32")
    bare = {"state_dict": _make("resnet18_modified", 100).state_dict()}
    with pytest.raises(CheckpointError, match="100 classes, the dataset has 10"):
        load_checkpoint(_make("resnet18_modified", 10), bare)


def test_mismatched_state_dict_is_one_line():
    with pytest.raises(CheckpointError) as err:  # another architecture altogether
        load_checkpoint(_make("convnet_w32"), _make("mobilenetv2").state_dict())
    msg = str(err.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match=r"conv1.weight has shape \[64, 3, 7, 7\]"):
        load_checkpoint(_make("resnet18_modified"), _make("resnet18").state_dict())


def test_corrupt_or_missing_file(tmp_path):
    model = _make("convnet_w32")
    save_checkpoint(model, tmp_path / "m.pt", "convnet_w32", 10, in_channels=3, image_size=32)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 8)
    for bad in ("cut.pt", "junk.pt", "absent.pt"):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(model, tmp_path / bad)
        assert bad in str(err.value) and "\n" not in str(err.value)


def test_dc_convnet_pads_grayscale_like_the_dc_code():
    from ccfs.models import create_model

    gray = create_model("convnet_dc", 10, 1, 28)
    assert gray.features[0].padding == (3, 3) and gray.num_features == 128 * 4 * 4
    assert gray(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    rgb = create_model("convnet_dc", 10, 3, 32)
    assert rgb.features[0].padding == (1, 1) and rgb.num_features == 128 * 4 * 4
