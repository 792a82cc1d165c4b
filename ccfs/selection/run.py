"""The select stage: run every method in `select.method` and write

    OUT/select/<method>/selected_indices.json   {"ipc", "alpha", "idx_selected"} (official format)
    OUT/select/<method>/meta.json               distilled per class, per-class counts, seconds
    OUT/select/ccfs/rounds.json                 the round log (and state.json while running)

`window` expands to one method per beta: `window_b0.0`, `window_b0.1`, ...
"""
from __future__ import annotations

import time

import torch

from ccfs.artifacts import read_json, torch_save, write_json
from ccfs.context import Run
from ccfs.errors import ConfigError
from ccfs.objectives import KD, CrossEntropy
from ccfs.selection import SELECTORS, SelectionInputs
from ccfs.selection.ccfs import Filter, RoundState
from ccfs.teacher.difficulty import ease
from ccfs.train import accuracy, fit, predict_logits


def method_names(cfg) -> list[str]:
    names = []
    for m in cfg.select.method:
        names += [f"window_b{b:g}" for b in cfg.select.window_betas] if m == "window" else [m]
    return names


def base_method(name: str) -> tuple[str, float]:
    if name.startswith("window_b"):
        return "window", float(name[len("window_b"):])
    return name, 0.0


def objective(run: Run):
    if run.cfg.eval.objective == "kd":
        return KD(run.teacher, run.cfg.train.temperature)
    return CrossEntropy()


def hardness(run: Run) -> torch.Tensor | None:
    """The configured score as "higher = harder", or None for score `logits`."""
    name = run.cfg.select.score
    if name == "logits":
        return None
    if name not in run.scores:
        have = ", ".join(run.scores) or "none"
        raise ConfigError(f"select.score={name} but the teacher stage recorded {have}; "
                          f"import one with teacher.scores=FILE or pick another score")
    return -ease(run.scores[name].float(), name)


def make_filter_trainer(run: Run, method: str):
    cfg = run.cfg
    recipe = cfg.train
    if cfg.select.filter_epochs:
        from dataclasses import replace

        recipe = replace(recipe, epochs=cfg.select.filter_epochs)
    arch = cfg.select.filter_model or cfg.eval.models[0]
    d = run.data

    def train_filter(j: int, selected: list[int], cpc: int) -> Filter:
        data = run.synthetic_set(cpc, selected)
        model = run.model(arch, cfg.seed * 1000 + j)
        t0 = time.perf_counter()
        fit(model, data, recipe, objective(run), mean=d.mean, std=d.std, device=run.device,
            seed=cfg.seed * 1000 + j, progress=cfg.progress, desc=f"{method} filter {j + 1}")
        t1 = time.perf_counter()
        logits = predict_logits(model, d.train.images, d.mean, d.std, run.device).cpu()
        t2 = time.perf_counter()
        return Filter(logits, accuracy(model, d.test, d.mean, d.std, run.device), t1 - t0, t2 - t1)

    return train_filter


def _features(run: Run) -> torch.Tensor:
    """Teacher features [N, D] of the un-augmented train set (herding, k-center)."""
    d = run.data
    return predict_logits(run.teacher, d.train.images, d.mean, d.std, run.device, features=True).cpu()


def check_budget(run: Run) -> None:
    counts = torch.bincount(run.data.train.labels, minlength=run.data.num_classes)
    ipc = run.cfg.select.ipc
    if ipc > int(counts.min()):
        c = int(counts.argmin())
        raise ConfigError(f"select.ipc={ipc} is larger than class {c} ({run.data.classes[c]!r}), which has "
                          f"{int(counts[c])} training images; use select.ipc <= {int(counts.min())}")


def _inputs(run: Run, name: str, folder) -> SelectionInputs:
    base, beta = base_method(name)
    state_path = folder / "state.json"
    state = RoundState(**read_json(state_path)) if state_path.is_file() else None
    return SelectionInputs(
        labels=run.data.train.labels, num_classes=run.data.num_classes, ipc=run.cfg.select.ipc,
        cpc=run.cpc, hardness=hardness(run), score_name=run.cfg.select.score,
        teacher_correct=run.teacher_correct, teacher_logits=run.teacher_train_logits,
        features=lambda: _features(run), train_filter=make_filter_trainer(run, base),
        cfg=run.cfg.select, seed=run.cfg.seed, beta=beta, state=state,
        on_round=lambda s: write_json(state_path, s.__dict__))


FILTER_METHODS = ("ccfs", "self_evolved")  # selectors that train filters


def selection_settings(run: Run, name: str | None = None) -> dict:
    """What a selection (or, with name None, an evaluation record) depends on besides the
    pinned data/teacher/distill sections."""
    from ccfs.config import to_dict

    cfg = run.cfg
    out = {"select": {k: v for k, v in to_dict(cfg.select).items() if k != "method"}}
    if name is None or base_method(name)[0] in FILTER_METHODS:
        out.update({"train": to_dict(cfg.train), "objective": cfg.eval.objective,
                    "filter_model": cfg.select.filter_model or cfg.eval.models[0]})
    if name is None:
        out["full_epochs"] = cfg.eval.full_epochs
    return out


def settings_hash(run: Run) -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps(selection_settings(run), sort_keys=True).encode()).hexdigest()[:12]


def _check_settings(run: Run, folder) -> None:
    """A method folder made with other settings is never silently reused."""
    path = folder / "settings.json"
    now = selection_settings(run, folder.name)
    if path.is_file() and read_json(path) != now:
        raise ConfigError(f"{folder} was made with other select/train settings; use a new out= "
                          f"directory or delete {folder} to redo it")
    if not path.is_file():
        write_json(path, now)


def select_one(run: Run, name: str) -> None:
    folder = run.out / "select" / name
    _check_settings(run, folder)
    if (folder / "selected_indices.json").is_file():
        print(f"select {name}: done already")
        return
    t0 = time.perf_counter()
    sel = SELECTORS[base_method(name)[0]](_inputs(run, name, folder))
    seconds = time.perf_counter() - t0
    idx = sel.indices.tolist()
    labels = run.data.train.labels
    if len(set(idx)) != len(idx):
        raise RuntimeError(f"selector {name} returned duplicate indices")  # a bug, not user input
    if "rounds" in sel.log:
        write_json(folder / "rounds.json", sel.log["rounds"])
    extra = {}
    if sel.log.get("distill_init") and sel.distilled:
        from ccfs.distill.run import distill_from_real

        torch_save(distill_from_real(run, sel.log["distill_init"], sel.distilled), folder / "distilled.pt")
        extra = {"distilled_file": "distilled.pt", "distill_init": sel.log["distill_init"]}
    write_json(folder / "meta.json", {**extra,
        "method": name, "distilled_per_class": sel.distilled, "real": len(idx), "seconds": seconds,
        "real_per_class": torch.bincount(labels[sel.indices], minlength=run.data.num_classes).tolist()
        if idx else [0] * run.data.num_classes})
    ipc = run.cfg.select.ipc
    write_json(folder / "selected_indices.json", {"ipc": ipc, "alpha": sel.distilled / ipc, "idx_selected": idx})
    (folder / "state.json").unlink(missing_ok=True)
    print(f"select {name}: {len(idx)} real + {sel.distilled}/class distilled in {seconds:.1f}s")


def select_stage(run: Run) -> None:
    check_budget(run)
    for name in method_names(run.cfg):
        select_one(run, name)
