"""Typed configuration: dataclasses with defaults, YAML presets, dotted overrides.

`load_config(preset, ["select.ipc=50", "eval.seeds=[0,1,2]"])` merges the dataclass
defaults, the preset (a name under `configs/` or a YAML path) and the overrides, checks
every key and type, and returns a `Config`. An unknown key or a wrong type is a
`ConfigError` that names the valid keys.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ccfs.errors import ConfigError
from ccfs.train import Recipe

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataCfg:
    """Which dataset, read from where."""
    name: str = "fashion-mnist"
    root: Optional[str] = None  # None: the dataset table's default folder
    image_size: Optional[int] = None  # imagefolder only: resize to this size
    channels: Optional[int] = None  # imagefolder only: 1 or 3


@dataclass
class TeacherCfg:
    """The teacher: trained on the full train set with cross-entropy, or imported."""
    model: str = "convnet_w32_bn"
    epochs: int = 8
    batch_size: int = 256
    lr: float = 0.05
    weight_decay: float = 5e-4
    warmup_epochs: int = 0
    augment: str = "crop"  # the squeeze recipe: random crop with padding + flip
    crop_pad: int = 2  # pixels
    checkpoint: Optional[str] = None  # import a trained teacher instead of training one
    scores: Optional[str] = None  # import a difficulty-score file (.npy forgetting, .npz C-score)
    record_epochs: Optional[list[int]] = None  # epochs whose logits feed EL2N/loss (None: early ones)

    def recipe(self) -> Recipe:
        return Recipe(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                      weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
                      augment=self.augment, crop_pad=self.crop_pad, eval_every=1)


@dataclass
class DistillCfg:
    """The distilled part: SRe2L / CDA synthesis from the teacher, or imported images."""
    method: str = "cda"  # sre2l | cda | folder | tensor | none
    from_: Optional[str] = None  # key `distill.from`: folder or tensor file to import
    iterations: int = 300
    lr: float = 0.1  # Adam, on normalised pixels
    r_bn: float = 0.01
    first_bn_multiplier: float = 10.0
    jitter: int = 2  # pixels
    batch_ipc: int = 10  # images per class in one optimisation batch
    cda_schedule: str = "step"  # step | linear | cosine
    init: str = "noise"  # noise | real
    random_choice: bool = False  # folder import: a seeded random choice instead of the first files
    resize: bool = False  # folder import: resize images of another size


@dataclass
class SelectCfg:
    """Which real images join the distilled ones (SPEC.md §2, §6)."""
    method: list[str] = field(default_factory=lambda: ["ccfs", "random"])
    ipc: int = 50  # images per class in the synthetic set
    alpha: float = 0.2  # distilled portion: cpc = int(ipc * alpha)
    curricula: int = 3  # J
    score: str = "forgetting"  # fine-stage difficulty: forgetting | cscore | logits | el2n | margin | aum | loss
    coarse: str = "misclassified"  # misclassified | correct
    fine: str = "simple"  # simple | hard | random
    balance: bool = True  # per-class quotas in the fine stage
    teacher_correct: bool = True  # restrict the pool to teacher-correct images
    shortfall: str = "carry"  # carry (always meet IPC) | reference (under-fill like the official code)
    filter_model: Optional[str] = None  # None: the first of eval.models
    filter_epochs: Optional[int] = None  # None: train.epochs
    window_betas: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(10)])
    window_unit: str = "ipc"  # window skips int(beta * IPC) (SPEC.md §6) or int(beta * class size): class
    selmatch_beta: float = 0.5  # selmatch: the window's beta before distilling the α part from it


@dataclass
class EvalCfg:
    """Fresh students trained on each synthetic set (KD from the teacher)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    models: list[str] = field(default_factory=lambda: ["convnet_w32"])
    objective: str = "kd"  # kd | ce
    full_epochs: int = 10  # epochs for the full-data baseline (method `full`)


@dataclass
class Config:
    data: DataCfg = field(default_factory=DataCfg)
    teacher: TeacherCfg = field(default_factory=TeacherCfg)
    distill: DistillCfg = field(default_factory=DistillCfg)
    select: SelectCfg = field(default_factory=SelectCfg)
    train: Recipe = field(default_factory=Recipe)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = torch's default
    progress: bool = True


# ----------------------------------------------------------------------------- mechanics

def _key(f: dataclasses.Field) -> str:
    return f.name.rstrip("_")


def _fields(cls) -> dict[str, tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return {_key(f): (f.name, hints[f.name]) for f in dataclasses.fields(cls)}


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], key)
    if origin is list:
        if not isinstance(value, list):
            value = [value]  # a scalar where a list is expected: a one-element list
        return [_check_type(v, args[0], key) for v in value]
    if origin is tuple:
        return tuple(_check_type(v, a, key) for v, a in zip(value, args))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-3` (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} should be of type {getattr(tp, '__name__', tp)}")
    return value


def _build(cls, values: dict, prefix: str):
    fields = _fields(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {prefix + key!r}; valid keys: "
                              + ", ".join(prefix + k for k in fields))
        name, tp = fields[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix + key} is a section; set its keys, e.g. {prefix + key}.KEY=VALUE")
            kwargs[name] = _build(tp, value, prefix + key + ".")
        else:
            kwargs[name] = _check_type(value, tp, prefix + key)
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """A config as a nested plain dict with the user-facing key names."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[_key(f)] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """'select.ipc=50' -> {'select': {'ipc': 50}} (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} should look like key=value, e.g. select.ipc=50")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def preset_path(preset: str) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    named = CONFIG_DIR / f"{preset}.yaml"
    if named.is_file():
        return named
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"no preset {preset!r}: give a YAML file or one of: {', '.join(names)}")


def read_preset(preset: str) -> dict:
    path = preset_path(preset)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} should hold a mapping of config sections")
    return values


def load_config(preset: str | None, overrides: list[str] = ()) -> Config:
    values = read_preset(preset) if preset else {}
    for text in overrides:
        values = _merge(values, parse_override(text))
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- validation

CHOICES = {
    "distill.method": ("sre2l", "cda", "folder", "tensor", "none"),
    "distill.cda_schedule": ("step", "linear", "cosine"),
    "distill.init": ("noise", "real"),
    "select.coarse": ("misclassified", "correct"),
    "select.fine": ("simple", "hard", "random"),
    "select.shortfall": ("carry", "reference"),
    "select.window_unit": ("ipc", "class"),
    "select.score": ("forgetting", "cscore", "logits", "el2n", "el2n_early", "loss", "margin", "aum"),
    "train.augment": ("rrc", "crop", "none"),
    "teacher.augment": ("rrc", "crop", "none"),
    "eval.objective": ("kd", "ce"),
}


def _get(cfg: Config, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part if hasattr(obj, part) else part + "_")
    return obj


def validate(cfg: Config) -> None:
    """Checks that need no data; dataset-dependent checks happen in the stages."""
    from ccfs.selection import SELECTORS  # late import: selection imports config users

    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not one of: {', '.join(allowed)}")
    s = cfg.select
    if not 0.0 <= s.alpha < 1.0:
        raise ConfigError(f"select.alpha={s.alpha} must be in [0, 1): the distilled portion of each class")
    if s.ipc < 1:
        raise ConfigError(f"select.ipc={s.ipc} must be at least 1")
    if s.curricula < 1:
        raise ConfigError(f"select.curricula={s.curricula} must be at least 1 (J rounds)")
    for m in s.method:
        if m not in SELECTORS:
            raise ConfigError(f"unknown select.method {m!r}; valid: {', '.join(SELECTORS)}")
    if cfg.distill.method in ("folder", "tensor") and not cfg.distill.from_:
        raise ConfigError(f"distill.method={cfg.distill.method} needs distill.from=PATH")
    for name, value in (("train.epochs", cfg.train.epochs), ("teacher.epochs", cfg.teacher.epochs)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be at least 1")
    if not cfg.eval.seeds or not cfg.eval.models:
        raise ConfigError("eval.seeds and eval.models must each name at least one entry")


def save_config(cfg: Config, path: Path) -> None:
    from ccfs.artifacts import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
