"""The evaluate stage: fresh students trained by the shared recipe (KD from the teacher)
on each synthetic set, for every model in eval.models and seed in eval.seeds. Each
result is one JSON line in OUT/results.jsonl (`ccfs.records`); finished students are
skipped, so the stage resumes.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ccfs import distributed, methods, records
from ccfs.api import train_student
from ccfs.artifacts import git_commit
from ccfs.config import to_dict
from ccfs.context import Run
from ccfs.data.datasets import Split


def best_last20(hist, recipe) -> float | None:
    """The paper's metric, where the recipe tests more than the final epoch (None otherwise)."""
    return hist.best_last20(recipe.epochs) if len(hist.test_acc) > 1 else None


def evaluate_one(run: Run, run_name: str, model_name: str, seed: int, *, alpha: float, data: Split) -> dict:
    cfg, d = run.cfg, run.data
    full = methods.parse(run_name)[1].full_data
    recipe = replace(cfg.train, epochs=cfg.eval.full_epochs) if full and cfg.train.steps <= 0 else cfg.train
    recipe = replace(recipe, epochs=recipe.epochs_for(len(data)), steps=0)  # the compute rule, resolved
    t0 = time.perf_counter()
    hist = train_student(d, data, None, model=model_name, recipe=recipe, seed=seed, device=run.device,
                    progress=cfg.progress, desc=f"eval {run_name} {model_name} s{seed}", objective_fn=run.objective())
    return {"method": run_name, "model": model_name, "ipc": cfg.select.ipc, "alpha": alpha, "seed": seed,
            "final_acc": hist.final_acc, "val_acc": hist.val_acc, "best_last20_acc": best_last20(hist, recipe),
            "test_acc_by_epoch": {str(k): v for k, v in sorted(hist.test_acc.items())},
            "images": len(data), "epochs": recipe.epochs, "train_seconds": time.perf_counter() - t0,
            "dataset": d.name, "settings": records.settings_hash(cfg), "config": to_dict(cfg),
            "commit": git_commit()}


def _todo(run: Run) -> list[tuple[str, str, int]]:
    """(run name, model, seed) of every student not recorded yet, in a fixed order."""
    done = records.done_keys(run.out)
    settings = records.settings_hash(run.cfg)
    alpha = {n: run.selected_indices(n, run.selection_seeds(n)[0])["alpha"] for n in methods.run_names(run.cfg.select)}
    return [(n, m, s) for n in methods.run_names(run.cfg.select) for m in run.cfg.eval.models for s in run.cfg.eval.seeds
            if records.key(n, m, run.cfg.select.ipc, alpha[n], seed=s, settings=settings) not in done]


def evaluate_stage(run: Run) -> None:
    """Every missing student; under torchrun one student per rank at a time (waves of
    world-size students), rank 0 appending the wave's records in a fixed order."""
    todo = distributed.on_main(lambda: _todo(run))
    world, rank = distributed.world_size(), distributed.rank()
    sets: dict[tuple, tuple] = {}  # (run name, selection seed) -> its synthetic set, built once
    for start in range(0, len(todo), world):
        wave = todo[start:start + world]
        rec = None
        if rank < len(wave):
            run_name, model_name, seed = wave[rank]
            which = (run_name, run.selection_seed(run_name, seed))
            if which not in sets:
                sets[which] = run.selection(*which)
            data, sel, _ = sets[which]
            with distributed.local():  # an independent student: no DDP, no sharded test pass
                rec = evaluate_one(run, run_name, model_name, seed, alpha=sel["alpha"], data=data)
        for r in distributed.gather(rec):
            if r is not None and distributed.is_main():
                records.append(run.out, r)
                val = f"val {r['val_acc']:.2f}%, " if r.get("val_acc") is not None else ""
                print(f"evaluate {r['method']:>14} {r['model']:>14} seed {r['seed']}: {val}test {r['final_acc']:.2f}% "
                      f"({r['images']} images, {r['train_seconds']:.0f}s)")
