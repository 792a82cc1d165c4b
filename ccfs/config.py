"""Typed configuration: dataclasses with defaults, YAML presets, dotted overrides.

`load_config(preset, ["select.ipc=50", "eval.seeds=[0,1,2]"])` merges the dataclass
defaults, the preset (a name under `configs/` or a YAML path) and the overrides, checks
every key, type and choice, and returns a `Config`. An unknown key, a wrong type or a value
outside a `Literal` is a `ConfigError` that names the valid ones. Every field carries a
one-line description (`doc`), listed by `ccfs config`. Loading a config imports no torch;
method names are checked against `ccfs.selection.methods` before a stage starts.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ccfs.errors import ConfigError
from ccfs.scores import SCORE_NAMES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def doc(default: Any, text: str) -> Any:
    """A dataclass field with its default (lists and sections are copied per instance) and
    its one-line description."""
    if isinstance(default, list) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass
class Recipe:
    """How a model is trained: the teacher, the filters and the students all use this."""
    epochs: int = doc(30, "training epochs")
    batch_size: int = doc(256, "images per step; 0 = the paper's rule: 32 if |S| < 5000, 64 if < 10000, else 128")
    lr: float = doc(0.05, "peak learning rate (SGD)")
    weight_decay: float = doc(5e-4, "SGD weight decay")
    warmup_epochs: int = doc(0, "epochs of linear warmup from 0.01 × lr; then cosine to 0, stepped per epoch")
    augment: Literal["rrc", "crop", "none"] = doc("rrc", "rrc (RandomResizedCrop) | crop (zero-pad, random crop) | none")
    flip: bool = doc(True, "random horizontal flip (turn it off for data whose mirror image is another class, e.g. digits)")
    rrc_min_scale: float = doc(0.08, "augment=rrc: the crop's area range [rrc_min_scale, 1] of the image (small images "
                                "want a softer crop than ImageNet's 0.08)")
    crop_pad: int = doc(4, "augment=crop: pixels of zero padding (4 at 32 px, as the paper's CIFAR recipe)")
    temperature: float = doc(20.0, "KD temperature T")
    mix: Literal["none", "mixup", "cutmix"] = doc(
        "none", "after the crop and flip, mix each batch with a shuffled copy of itself (λ ~ U(0, 1)); KD only; "
                "cutmix is SRe2L / CDA's own evaluation protocol, for comparing with their tables")
    steps: int = doc(0, "the compute rule: if > 0, train this many optimizer steps whatever the set size "
                     "(epochs = steps / batches per epoch, at least 1); 0: train.epochs")
    eval_last: int = doc(1, "test passes spread over the last 20 % of epochs, the final one included (1: the "
                         "final epoch only; more: the paper's best-of-last-20 % metric is recorded too)")
    amp: bool = doc(True, "mixed precision on CUDA (ignored on the CPU); off for full-precision numerics")
    compile: bool = doc(False, "torch.compile the training forward (of the model this recipe trains, and of its KD teacher), "
                        "one graph per batch shape; CCFS filters stay eager. On 2 CPU cores students take about 0.76 "
                        "of the time (bench/results/compile.md); needs a C++ compiler on the CPU; numerics differ "
                        "slightly from eager, so its records are kept apart")

    def batch_for(self, n: int) -> int:
        if self.batch_size > 0:
            return min(self.batch_size, n)
        return 32 if n < 5000 else 64 if n < 10000 else 128

    def epochs_for(self, n: int) -> int:
        """Epochs on a set of `n` images: `epochs`, or under the steps rule as many as give
        `steps` optimizer steps (rounded; at least 1)."""
        if self.steps <= 0:
            return self.epochs
        return max(1, round(self.steps / math.ceil(n / self.batch_for(n))))


@dataclass
class DataCfg:
    """Which dataset, read from where."""
    name: str = doc("fashion-mnist", "fashion-mnist | mnist | cifar10 | cifar100 | tiny-imagenet | imagefolder")
    root: Optional[str] = doc(None, "folder holding the dataset files (None: the dataset table's default)")
    image_size: Optional[int] = doc(None, "imagefolder only: resize images to this many pixels a side")
    channels: Optional[int] = doc(None, "imagefolder only: 1 (gray) or 3 (RGB)")
    mean: Optional[list[float]] = doc(None, "per-channel normalisation mean (None: the dataset table's)")
    std: Optional[list[float]] = doc(None, "per-channel normalisation std (None: the dataset table's)")
    store: Optional[str] = doc(None, "read the data in place from this on-disk store (ccfs prepare --store): for sets "
                                 "larger than memory, such as ImageNet-sized folders")
    val_size: int = doc(5000, "images (class-balanced, fixed seed) held out of the train set as a validation split: "
                        "never trained on or selected from; every choice is made on it (0: none)")


# The teacher's defaults, the Fashion-MNIST main job's: the squeeze recipe's random crop with padding +
# flip, 15 epochs at lr 0.08, tested after the last epoch.
TEACHER_RECIPE = Recipe(epochs=15, batch_size=256, lr=0.08, weight_decay=5e-4, warmup_epochs=0,
                        augment="crop", crop_pad=2)
# The students' and filters' defaults: the recipe chosen on the Fashion-MNIST validation split
# (research/results/recipe_fmnist_ipc50.md, first round): the compute rule at 4 800 steps, the paper's
# batch rule, a softer RandomResizedCrop at 28 px, KD at T = 4.
STUDENT_RECIPE = Recipe(steps=4800, batch_size=0, lr=0.05, weight_decay=5e-4, warmup_epochs=5, temperature=4.0,
                        rrc_min_scale=0.5)


@dataclass
class TeacherCfg:
    """The teacher: trained on the full train set with cross-entropy, or imported."""
    model: str = doc("convnet_w32_bn", "teacher architecture (a name in the model registry)")
    train: Recipe = doc(TEACHER_RECIPE, "the teacher's recipe (own defaults: 15 epochs, lr 0.08, crop + flip)")
    checkpoint: Optional[str] = doc(None, "import a trained teacher from this checkpoint instead of training one")
    scores: Optional[str] = doc(None, "import a difficulty-score file (.npy forgetting, .npz C-score or ccfs scores)")


SYNTHESIS = ("sre2l", "cda")  # distill.method values that synthesise from the teacher


@dataclass
class DistillCfg:
    """The distilled part: SRe2L / CDA synthesis from the teacher, or imported images."""
    method: Literal["sre2l", "cda", "folder", "tensor", "none"] = doc(
        "cda", "sre2l | cda (BatchNorm matching from the teacher) | folder | tensor (import) | none")
    from_: Optional[str] = doc(None, "key distill.from: the folder or tensor file to import")
    iterations: int = doc(300, "Adam steps per batch of synthetic images")
    lr: float = doc(0.25, "Adam learning rate on normalised pixels, cosine-decayed to 0")
    r_bn: float = doc(1.0, "weight of the BatchNorm-statistics term")
    jitter: int = doc(2, "pixels of random roll per step")
    batch_ipc: int = doc(10, "images per class in one optimisation batch")
    random_choice: bool = doc(False, "folder import: a seeded random choice of files, not the first ones (for a folder "
                                "holding more images per class than the run uses)")
    resize: bool = doc(False, "folder import: resize images of another size instead of refusing them (another "
                         "method's images made at another resolution)")

    @property
    def synthesises(self) -> bool:
        """Whether the images are made from the teacher's BatchNorm statistics (not imported)."""
        return self.method in SYNTHESIS


@dataclass
class SelectCfg:
    """Which real images join the distilled ones (docs/method.md §2, §6)."""
    method: list[str] = doc(["ccfs", "random"], "selection methods to run and compare (listed by `ccfs config`)")
    ipc: int | list[int] = doc(50, "images per class in the synthetic set; a list runs a sweep (one run "
                               "directory per IPC and α under out=, sharing teacher and distilled images)")
    alpha: float | list[float] = doc(0.2, "distilled portion α in [0, 1): int(ipc · α) distilled images per class; "
                                     "a list: a sweep, as for ipc")
    curricula: int = doc(3, "J, the number of CCFS rounds")
    score: Literal[SCORE_NAMES] = doc("forgetting", "difficulty score of the fine stage and the score baselines "
                                      "(forgetting: validation's pick with the 15-epoch Fashion-MNIST teacher, "
                                      "research/score_choice)")
    coarse: Literal["misclassified", "correct"] = doc("misclassified", "coarse stage keeps what the filter gets wrong | right "
                                                        "(the paper's ablation)")
    fine: Literal["simple", "hard", "random"] = doc("simple", "fine-stage order: easiest first | hardest first | random "
                                                   "(the paper's ablation)")
    balance: bool = doc(True, "per-class quotas in the fine stage (off: the top quota · classes over all; the "
                           "paper's ablation)")
    teacher_correct: bool = doc(True, "restrict the pool to images the teacher classifies correctly (off: the paper's "
                                   "ablation)")
    shortfall: Literal["carry", "reference"] = doc(
        "carry", "carry deficits and fill them in the last round (IPC always met) | reference: the official "
        "code's rule, which under-fills (for exact parity with it)")
    filter_model: Optional[str] = doc(None, "architecture of the CCFS filters (None: the first of eval.models; another one "
                                        "studies how a selection transfers across architectures)")
    filter_steps: Optional[int] = doc(None, "optimizer steps of each filter under the steps rule (None: train.steps)")
    filter_eval_size: int = doc(1000, "images of the fixed class-balanced validation sample (test without data.val_size) each filter's accuracy "
                                "is logged on (0: none)")
    window_betas: list[float] = doc([0.1, 0.3, 0.5, 0.7, 0.9], "window: the β values swept")
    window_unit: Literal["ipc", "class"] = doc(
        "class", "window skips int(β · IPC) hardest images (ipc) or int(β · class size) (class)")
    selmatch_beta: float = doc(0.5, "selmatch baseline: the window's β before its α part is distilled (SelMatch's own "
                                   "choice for high IPC)")

    @property
    def cpc(self) -> int:
        """Distilled images per class, int(ipc · α), at one point (not a sweep's lists)."""
        return int(self.ipc * self.alpha)


@dataclass
class EvalCfg:
    """Fresh students trained on each synthetic set (KD from the teacher)."""
    seeds: list[int] = doc([0, 1, 2], "one student per seed, method and model")
    models: list[str] = doc(["convnet_w32"], "student architectures (the first also makes the CCFS filters)")
    objective: Literal["kd", "ce"] = doc("kd", "loss of students and filters: kd (from the teacher) | ce (hard labels: how much "
                                              "a set is worth without the teacher)")
    full_epochs: int = doc(10, "epochs of the full-data student (method full) where train.steps is 0; under the steps "
                            "rule it trains train.steps")
    hard_labels: bool | list[str] = doc(
        False, "also train a hard-label (cross-entropy) student beside each KD student, of every method (true) or of "
               "the methods listed: how much of a set's accuracy comes from the set and how much from the teacher "
               "(DD-Ranking's IOR / HLR / LRS; needs random and full among them); selections and KD records are unchanged; "
               "nothing to add under eval.objective=ce")
    group: int = doc(0, "students trained at once as one stacked model where they share a model, objective and "
                        "set size: 0 = automatic (one at a time on the CPU, where stacking measured slower; on "
                        "CUDA as many as a quarter of the free memory holds, up to 64) | 1 = one at a time | N = "
                        "up to N")
    sweep_seeds: int = doc(0, "swept methods (the window's β): 0 trains every value on every seed; N trains "
                           "every value on the first N seeds, then only the value picked on validation over "
                           "them on the other seeds (values + seeds - N students instead of values x seeds)")


@dataclass
class Config:
    data: DataCfg = doc(DataCfg(), "the dataset")
    teacher: TeacherCfg = doc(TeacherCfg(), "the teacher")
    distill: DistillCfg = doc(DistillCfg(), "the distilled part")
    select: SelectCfg = doc(SelectCfg(), "the selection")
    train: Recipe = doc(STUDENT_RECIPE, "the recipe of the filters and the students")
    eval: EvalCfg = doc(EvalCfg(), "the evaluation")
    out: str = doc("runs/default", "the run directory")
    seed: int = doc(0, "seed of the teacher, the distillation and the seed-free selections (random draws and "
                    "filters take each evaluation seed in turn)")
    device: str = doc("auto", "auto (CUDA when there is one) | cpu | cuda | cuda:N")
    deterministic: bool = doc(True, "on CUDA, deterministic kernels (cuDNN, cuBLAS), so that a seed gives one "
                              "result and a resumed run ends as an uninterrupted one; false: faster, not repeatable")
    threads: int = doc(0, "torch CPU threads; 0 = torch's default (a fixed count makes CPU results repeatable "
                        "across machines)")
    progress: bool = doc(True, "progress bars (drawn only on a terminal)")


def filter_recipe(cfg: Config) -> Recipe:
    """The CCFS filters' recipe: the students' (`train.*`) with `select.filter_steps` as the
    steps rule's count where it is set."""
    if cfg.select.filter_steps is not None:
        return dataclasses.replace(cfg.train, steps=cfg.select.filter_steps)
    return cfg.train


# ----------------------------------------------------------------------------- mechanics

def _key(f: dataclasses.Field) -> str:
    return f.name.rstrip("_")


def _fields(cls) -> dict[str, tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return {_key(f): (f.name, hints[f.name]) for f in dataclasses.fields(cls)}


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_i in inner[:-1]:  # the first type the value fits (int | list[int]: a number, else a list)
            if typing.get_origin(tp_i) is list and not isinstance(value, list):
                continue
            try:
                return _check_type(value, tp_i, key)
            except ConfigError:
                pass
        return _check_type(value, inner[-1], key)
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


# Recipe fields the teacher never uses: it trains with cross-entropy on hard labels (no KD
# temperature, no mixing), counts its length in epochs over the whole set, and is tested once,
# after its last epoch. Not settable, not listed.
NOT_FOR_TEACHER = ("temperature", "mix", "eval_last", "steps")


def _build(cls, values: dict, prefix: str, base: Any = None):
    """An instance of `cls` from `base` (default: cls()) with `values` set, checked."""
    base = cls() if base is None else base
    fields = _fields(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {prefix + key!r}; valid keys: "
                              + ", ".join(prefix + k for k in fields))
        if prefix == "teacher.train." and key in NOT_FOR_TEACHER:
            raise ConfigError(f"teacher.train.{key} is not a teacher setting: the teacher trains with cross-entropy "
                              f"on hard labels and is tested after its last epoch (train.{key} is the students')")
        name, tp = fields[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix + key} is a section; set its keys, e.g. {prefix + key}.KEY=VALUE")
            kwargs[name] = _build(tp, value, prefix + key + ".", getattr(base, name))
        else:
            kwargs[name] = _check_type(value, tp, prefix + key)
    return dataclasses.replace(base, **kwargs)


def to_dict(obj, prefix: str = "") -> dict:
    """A config as a nested plain dict with the user-facing key names (the settings a user
    can set: not the teacher recipe's NOT_FOR_TEACHER fields)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if prefix == "teacher.train." and _key(f) in NOT_FOR_TEACHER:
            continue
        out[_key(f)] = to_dict(value, prefix + _key(f) + ".") if dataclasses.is_dataclass(value) else value
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


def read_preset(preset: str, _seen: tuple[Path, ...] = ()) -> dict:
    """A preset's values, over those of the preset its top-level `base:` names (a name under
    `configs/` or a YAML path, itself read the same way); `base` is consumed here."""
    path = preset_path(preset)
    if path.resolve() in _seen:
        raise ConfigError(f"preset bases form a cycle: {' -> '.join(p.stem for p in (*_seen, path))}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} should hold a mapping of config sections")
    base = values.pop("base", None)
    if base is None:
        return values
    try:
        base_path = preset_path(str(base))
    except ConfigError as e:
        raise ConfigError(f"{path}: base: {e}") from None
    return _merge(read_preset(str(base_path), (*_seen, path.resolve())), values)


def load_config(preset: str | None, overrides: list[str] = ()) -> Config:
    values = read_preset(preset) if preset else {}
    for text in overrides:
        values = _merge(values, parse_override(text))
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- validation

def validate(cfg: Config) -> None:
    """Range checks that need no data (choices are checked by their Literal types);
    dataset-dependent checks happen before the stages."""
    s = cfg.select
    for alpha in (s.alpha if isinstance(s.alpha, list) else [s.alpha]):
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"select.alpha={alpha} must be in [0, 1): the distilled portion of each class")
    for ipc in (s.ipc if isinstance(s.ipc, list) else [s.ipc]):
        if ipc < 1:
            raise ConfigError(f"select.ipc={ipc} must be at least 1")
    if [] in (s.ipc, s.alpha):
        raise ConfigError("select.ipc and select.alpha lists must name at least one value")
    if s.curricula < 1:
        raise ConfigError(f"select.curricula={s.curricula} must be at least 1 (J rounds)")
    if not s.method:
        raise ConfigError("select.method must name at least one method")
    if cfg.distill.method in ("folder", "tensor") and not cfg.distill.from_:
        raise ConfigError(f"distill.method={cfg.distill.method} needs distill.from=PATH")
    for name, value in (("train.epochs", cfg.train.epochs), ("teacher.train.epochs", cfg.teacher.train.epochs)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be at least 1")
    for key in ("mean", "std"):
        value = getattr(cfg.data, key)
        if value is not None and (not value or (key == "std" and min(value) <= 0)):
            raise ConfigError(f"data.{key}={value} must list one {'positive ' if key == 'std' else ''}value per channel")
    if cfg.train.mix != "none" and cfg.eval.objective != "kd":
        raise ConfigError(f"train.mix={cfg.train.mix} mixes images, not labels: it needs eval.objective=kd")
    if cfg.train.mix != "none" and cfg.eval.hard_labels not in (False, []):
        raise ConfigError(f"train.mix={cfg.train.mix} mixes images, not labels: the hard-label students of "
                          "eval.hard_labels cannot share it; set eval.hard_labels=false or train.mix=none")
    if cfg.data.val_size < 0 or cfg.train.steps < 0:
        raise ConfigError("data.val_size and train.steps must be 0 or more")
    if s.filter_steps is not None and s.filter_steps < 1:
        raise ConfigError("select.filter_steps must be at least 1 (or unset: as train.steps)")
    if not cfg.eval.seeds or not cfg.eval.models:
        raise ConfigError("eval.seeds and eval.models must each name at least one entry")
    if cfg.eval.group < 0:
        raise ConfigError(f"eval.group must be 0 (automatic) or more, not {cfg.eval.group}")
    if cfg.eval.sweep_seeds < 0:
        raise ConfigError(f"eval.sweep_seeds must be 0 (every seed) or more, not {cfg.eval.sweep_seeds}")


def dump_config(cfg: Config) -> str:
    """The resolved config as the YAML saved next to every run's artifacts."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------- listing

def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(map(_type_name, inner)) + (" or null" if len(inner) < len(args) else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


def describe(cfg: Config | None = None, obj: Any = None, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, value, description) of every field, sections expanded."""
    obj = obj if obj is not None else (cfg or Config())
    rows = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(cfg, value, prefix + _key(f) + ".")
        elif not (prefix == "teacher.train." and _key(f) in NOT_FOR_TEACHER):
            rows.append((prefix + _key(f), _type_name(hints[f.name]), value, f.metadata.get("doc", "")))
    return rows
