"""research.collect_records: what joins a records file, and when."""
from ccfs.config import load_config
from research.collect_records import settled


def _rec(method, seed, val=80.0):
    return {"method": method, "model": "convnet_w32", "ipc": 55, "alpha": 0.1, "seed": seed, "objective": "kd",
            "final_acc": val, "val_acc": val}


def test_window_joins_once_every_beta_trained_on_the_pick_seeds():
    cfg = load_config("fmnist-sweep")  # five β, picked on seed 0 (eval.sweep_seeds 1)
    betas = [f"window_b{b:g}" for b in cfg.select.window_betas]
    partial = [_rec("ccfs", 0), _rec("random", 0)] + [_rec(b, 0, 80 + i) for i, b in enumerate(betas[:3])]
    assert [r["method"] for r in settled(partial, cfg)] == ["ccfs", "random"]
    full = partial + [_rec(b, 0, 70.0) for b in betas[3:]] + [_rec(betas[2], 1)]
    assert [r["method"] for r in settled(full, cfg)] == [r["method"] for r in full]


def test_every_beta_on_every_seed_without_sweep_seeds():
    cfg = load_config("fmnist-sweep", ["eval.sweep_seeds=0", "eval.seeds=[0,1]"])
    betas = [f"window_b{b:g}" for b in cfg.select.window_betas]
    seed0 = [_rec(b, 0) for b in betas]
    assert settled(seed0, cfg) == []
    assert len(settled(seed0 + [_rec(b, 1) for b in betas], cfg)) == 2 * len(betas)

