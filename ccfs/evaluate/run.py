"""The evaluate stage: fresh students trained by the shared recipe (KD from the teacher)
on each synthetic set, for every model in eval.models and seed in eval.seeds. Each
result is one JSON line in OUT/results.jsonl (`ccfs.records`); finished students are
skipped, so the stage resumes.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ccfs import methods, records
from ccfs.api import train_student
from ccfs.artifacts import git_commit
from ccfs.config import to_dict
from ccfs.context import Run
from ccfs.data.datasets import Split


def best_last20(hist, recipe) -> float | None:
    """The paper's metric, where the recipe tests more than the final epoch (None otherwise)."""
    return hist.best_last20(recipe.epochs) if len(hist.test_acc) > 1 else None


def evaluate_one(run: Run, run_name: str, model_name: str, seed: int, alpha: float, data: Split) -> dict:
    cfg, d = run.cfg, run.data
    full = methods.parse(run_name)[1].full_data
    recipe = replace(cfg.train, epochs=cfg.eval.full_epochs) if full else cfg.train
    t0 = time.perf_counter()
    hist = train_student(d, data, None, model=model_name, recipe=recipe, seed=seed, device=run.device,
                    progress=cfg.progress, desc=f"eval {run_name} {model_name} s{seed}", objective_fn=run.objective())
    return {"method": run_name, "model": model_name, "ipc": cfg.select.ipc, "alpha": alpha, "seed": seed,
            "final_acc": hist.final_acc, "best_last20_acc": best_last20(hist, recipe),
            "test_acc_by_epoch": {str(k): v for k, v in sorted(hist.test_acc.items())},
            "images": len(data), "epochs": recipe.epochs, "train_seconds": time.perf_counter() - t0,
            "dataset": d.name, "settings": records.settings_hash(cfg), "config": to_dict(cfg),
            "commit": git_commit()}


def evaluate_stage(run: Run) -> None:
    done = records.done_keys(run.out)
    settings = records.settings_hash(run.cfg)
    for run_name in methods.run_names(run.cfg.select):
        data, sel, _ = run.selection(run_name)
        for model_name in run.cfg.eval.models:
            for seed in run.cfg.eval.seeds:
                if records.key(run_name, model_name, run.cfg.select.ipc, sel["alpha"], seed, settings) in done:
                    continue
                rec = evaluate_one(run, run_name, model_name, seed, sel["alpha"], data)
                records.append(run.out, rec)
                print(f"evaluate {run_name:>14} {model_name:>14} seed {seed}: final {rec['final_acc']:.2f}% "
                      f"({len(data)} images, {rec['train_seconds']:.0f}s)")
