"""The evaluate stage: fresh students trained by the shared recipe (KD from the teacher)
on each synthetic set, for every model in eval.models and seed in eval.seeds. Each
result is one JSON line in OUT/results.jsonl; finished (method, model, ipc, alpha, seed)
records are skipped, so the stage resumes.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

import torch

from ccfs.artifacts import append_jsonl, git_commit, read_json
from ccfs.config import to_dict
from ccfs.context import Run
from ccfs.data.datasets import Split
from ccfs.errors import ConfigError
from ccfs.selection.run import method_names, objective, settings_hash
from ccfs.train import fit


def load_records(path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by an interruption: ignored, its run is redone
    return records


def record_key(r: dict) -> tuple:
    return (r["method"], r["model"], r["ipc"], round(float(r["alpha"]), 4), r["seed"], r.get("settings"))


def current_records(run: Run) -> list[dict]:
    """Records of this run's present select/train settings (older settings stay in the file)."""
    h = settings_hash(run)
    return [r for r in load_records(run.out / "results.jsonl") if r.get("settings") == h]


def synthetic_for(run: Run, method: str):
    folder = run.out / "select" / method
    if not (folder / "selected_indices.json").is_file():
        raise ConfigError(f"{folder}/selected_indices.json is missing: run `ccfs select` first")
    sel = read_json(folder / "selected_indices.json")
    meta = read_json(folder / "meta.json")
    own = None
    if meta.get("distilled_file"):
        blob = torch.load(folder / meta["distilled_file"], weights_only=True)
        own = Split(blob["images"], blob["labels"])
    return run.synthetic_set(meta["distilled_per_class"], sel["idx_selected"], own), sel["alpha"]


def evaluate_one(run: Run, method: str, model_name: str, seed: int, alpha: float, data) -> dict:
    cfg, d = run.cfg, run.data
    recipe = replace(cfg.train, epochs=cfg.eval.full_epochs) if method == "full" else cfg.train
    model = run.model(model_name, seed)
    t0 = time.perf_counter()
    hist = fit(model, data, recipe, objective(run), mean=d.mean, std=d.std, device=run.device,
               seed=seed, test=d.test, progress=cfg.progress, desc=f"eval {method} {model_name} s{seed}")
    return {"method": method, "model": model_name, "ipc": cfg.select.ipc, "alpha": alpha, "seed": seed,
            "final_acc": hist.final_acc, "best_last20_acc": hist.best_last20(recipe.epochs),
            "test_acc_by_epoch": {str(k): v for k, v in sorted(hist.test_acc.items())},
            "images": len(data), "epochs": recipe.epochs, "train_seconds": time.perf_counter() - t0,
            "dataset": d.name, "settings": settings_hash(run), "config": to_dict(cfg), "commit": git_commit()}


def evaluate_stage(run: Run) -> None:
    path = run.out / "results.jsonl"
    done = {record_key(r) for r in load_records(path)}
    for method in method_names(run.cfg):
        data, alpha = synthetic_for(run, method)
        for model_name in run.cfg.eval.models:
            for seed in run.cfg.eval.seeds:
                key = (method, model_name, run.cfg.select.ipc, round(float(alpha), 4), seed, settings_hash(run))
                if key in done:
                    continue
                rec = evaluate_one(run, method, model_name, seed, alpha, data)
                append_jsonl(path, rec)
                print(f"evaluate {method:>14} {model_name:>14} seed {seed}: final {rec['final_acc']:.2f}% "
                      f"({len(data)} images, {rec['train_seconds']:.0f}s)")
