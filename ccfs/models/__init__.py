"""The model registry (`MODELS`, `create_model`) and checkpoint I/O.

Every model takes `(num_classes, in_channels, image_size)` and exposes
`forward_features(x) -> [B, num_features]`, `forward_head(f) -> [B, num_classes]` and
`forward(x) = forward_head(forward_features(x))`.

Our checkpoint format is `{"arch", "num_classes", "in_channels", "image_size",
"state_dict"}`; `load_checkpoint` also reads bare state dicts, ones wrapped in `"model"`
or `"state_dict"`, and keys prefixed by DataParallel (`module.`) or torch.compile
(`_orig_mod.`), as the published SRe2L / CCFS teachers are.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from functools import partial
from typing import Callable

import torch
from torch import nn

from ccfs.artifacts import torch_save
from ccfs.errors import CheckpointError, ConfigError
from ccfs.models.convnet import ConvNet
from ccfs.models.mobilenet import MobileNetV2
from ccfs.models.resnet import ResNet18
from ccfs.models.vgg import VGG


def _convnets() -> dict[str, Callable[..., nn.Module]]:
    variants = {}
    for width in (128, 32, 64):
        for norm in ("instance", "batch"):
            name = "convnet" + ("" if width == 128 else f"_w{width}") + ("_bn" if norm == "batch" else "")
            variants[name] = partial(ConvNet, width=width, depth=3, norm=norm)
    return variants


def dc_convnet(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """The DC / DSA / DM benchmark student exactly: width 128, depth 3, instance norm, and the
    DC code's first padding of 3 for 1-channel inputs (28 px -> 32 -> 16 -> 8 -> 4)."""
    return ConvNet(num_classes, in_channels, image_size, width=128, depth=3, norm="instance",
                   first_padding=3 if in_channels == 1 else 1)


MODELS: dict[str, Callable[..., nn.Module]] = {
    **_convnets(),
    "convnet_dc": dc_convnet,
    "resnet18_modified": partial(ResNet18, small_stem=True),
    "resnet18": partial(ResNet18, small_stem=False),
    "vgg11_bn": VGG,
    "mobilenetv2": MobileNetV2,
}


def create_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers (1d/2d/3d, SyncBatchNorm) of `model` that keep running
    statistics, in module order; the one BatchNorm check of ccfs."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_layers(model))


# ---------------------------------------------------------------- checkpoints

_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile


def _strip_prefixes(key: str) -> str:
    while key.startswith(_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def save_checkpoint(model: nn.Module, path, arch: str, num_classes: int,
                    *, in_channels: int, image_size: int, mean=None, std=None) -> None:
    """Write our format atomically (`ccfs.artifacts.atomic_path`), with the input
    normalisation (`mean`, `std` per channel) the model was trained with."""
    state = {_strip_prefixes(k): v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"arch": arch, "num_classes": int(num_classes), "in_channels": int(in_channels),
           "image_size": int(image_size), "state_dict": state}
    if mean is not None and std is not None:
        obj["normalization"] = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    torch_save(obj, path)


def _read(path) -> object:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # Training scripts often store their argparse args next to the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged or not a torch checkpoint "
                              f"({_load_failure(e)})") from e


def _load_failure(e: Exception) -> str:
    """One line out of torch.load's multi-paragraph errors."""
    text = str(e).strip()
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        detail = detail.split(" was not an allowed global")[0]
        return f"corrupt, or holds Python objects other than tensors ({detail})"
    return (text.splitlines() or [type(e).__name__])[0].split(". ")[0]


def _unwrap(obj, label: str) -> tuple[Mapping, Mapping | None]:
    """(state dict, our metadata or None) from whatever a checkpoint file held."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{label} holds a {type(obj).__name__}, not a state dict")
    if "arch" in obj and "state_dict" in obj:
        return obj["state_dict"], obj
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            return _unwrap(obj[key], label)[0], None
    return obj, None


def _examples(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _head_key(model: nn.Module) -> str:
    """State-dict key of the last Linear layer's weight (the classifier)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] + ".weight"


def _mismatch(model: nn.Module, state: Mapping) -> list[str]:
    """Why `state` cannot load into `model`, most useful reason first; [] if it can."""
    expected = model.state_dict()
    problems = []
    head = _head_key(model)
    if head in state and state[head].shape[0] != expected[head].shape[0]:
        problems.append(f"checkpoint has {state[head].shape[0]} classes, "
                        f"the dataset has {expected[head].shape[0]}")
    # BatchNorm fills a missing num_batches_tracked itself (pre-0.4.1 checkpoints).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if not problems:
        for k, v in expected.items():
            if k in state and state[k].shape != v.shape:
                problems.append(f"{k} has shape {list(state[k].shape)} in the checkpoint, "
                                f"{list(v.shape)} in the model")
                break
    return problems


def _fmt(values) -> str:
    return "[" + ",".join(f"{v:.4g}" for v in values) + "]"


def _check_normalization(meta: Mapping, normalization, label: str) -> None:
    """The data's (mean, std) must be what the checkpoint's model was trained with."""
    saved = meta.get("normalization")
    if saved is None or normalization is None:
        return
    mean, std = normalization
    same = all(len(a) == len(b) and all(abs(x - y) < 1e-4 for x, y in zip(a, b))
               for a, b in ((saved["mean"], mean), (saved["std"], std)))
    if not same:
        raise CheckpointError(
            f"{label} was trained on inputs normalised with mean {_fmt(saved['mean'])}, std {_fmt(saved['std'])}; "
            f"the data is normalised with mean {_fmt(mean)}, std {_fmt(std)}: set "
            f"data.mean={_fmt(saved['mean'])} data.std={_fmt(saved['std'])}")


def _check_meta(meta: Mapping, model: nn.Module, arch: str | None, label: str) -> None:
    if arch is not None and meta["arch"] != arch:
        raise CheckpointError(f"{label} is a {meta['arch']} model, not {arch}")
    if meta["num_classes"] != model.num_classes:
        raise CheckpointError(f"{label}: checkpoint has {meta['num_classes']} classes, "
                              f"the dataset has {model.num_classes}")


def load_checkpoint(model: nn.Module, path_or_obj, arch: str | None = None, normalization=None) -> nn.Module:
    """Load weights into `model` in place (and return it); any mismatch is a
    one-line `CheckpointError`. `normalization` (mean, std) of the data it will see is
    checked against the one a ccfs checkpoint records."""
    if isinstance(path_or_obj, Mapping):
        label, obj = "checkpoint", path_or_obj
    else:
        label = f"checkpoint {os.fspath(path_or_obj)}"
        obj = _read(os.fspath(path_or_obj))
    state, meta = _unwrap(obj, label)
    if meta is not None:
        _check_meta(meta, model, arch, label)
        _check_normalization(meta, normalization, label)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{label}: entry {bad[0]!r} is not a tensor; not a state dict")
    state = {_strip_prefixes(k): v for k, v in state.items()}
    problems = _mismatch(model, state)
    if problems:
        name = arch or type(model).__name__
        raise CheckpointError(f"{label} does not fit {name}: {'; '.join(problems)}")
    model.load_state_dict(state)
    return model
