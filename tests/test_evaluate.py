"""Which students the evaluate stage trains: eval.sweep_seeds picks the window's β on the
first seeds, then trains only the pick on the others (pure functions; the end-to-end run is
in test_pipeline)."""
from __future__ import annotations

from ccfs.config import load_config
from ccfs.evaluate.run import seeds_of
from ccfs.records import settled, sweep_picks

NAMES = ["ccfs", "window_b0.1", "window_b0.5", "window_b0.9"]


def rec(method, seed, val, model="c"):
    return {"method": method, "model": model, "ipc": 10, "alpha": 0.0, "seed": seed, "final_acc": 50.0,
            "val_acc": val}


def test_no_pick_before_every_value_has_the_first_seeds():
    recs = [rec("window_b0.1", 0, 80.0), rec("window_b0.5", 0, 90.0)]
    assert sweep_picks(recs, NAMES, [0]) == {}
    assert seeds_of("window_b0.5", "c", [0, 1, 2], 1, {}) == [0]  # the first pass: seed 0 for every value


def test_the_pick_is_the_best_validation_accuracy_over_the_first_seeds_per_model():
    recs = [rec("window_b0.1", 0, 80.0), rec("window_b0.5", 0, 90.0), rec("window_b0.9", 0, 85.0),
            rec("window_b0.5", 1, 10.0),  # a later seed of the pick does not undo it
            rec("window_b0.1", 0, 70.0, "r"), rec("window_b0.5", 0, 60.0, "r"), rec("window_b0.9", 0, 65.0, "r"),
            rec("ccfs", 0, 99.0)]
    picks = sweep_picks(recs, NAMES, [0])
    assert picks == {("window", "c"): "window_b0.5", ("window", "r"): "window_b0.1"}
    assert seeds_of("window_b0.5", "c", [0, 1, 2], 1, picks) == [0, 1, 2]
    assert seeds_of("window_b0.9", "c", [0, 1, 2], 1, picks) == [0]
    assert seeds_of("window_b0.5", "r", [0, 1, 2], 1, picks) == [0]
    assert seeds_of("window_b0.1", "r", [3, 4], 1, picks) == [3, 4]
    # two first seeds: the pick needs both and compares their means
    two = recs + [rec("window_b0.1", 1, 99.0), rec("window_b0.9", 1, 86.0)]
    assert sweep_picks(two, NAMES, [0, 1]) == {("window", "c"): "window_b0.1"}  # 89.5 > 85.5, 50


def test_every_seed_without_sweep_seeds_or_for_unswept_methods():
    assert seeds_of("window_b0.9", "c", [0, 1, 2], 0, {}) == [0, 1, 2]
    assert seeds_of("window_b0.9", "c", [0, 1], 2, {}) == [0, 1]  # N >= seeds: nothing to save
    assert seeds_of("ccfs", "c", [0, 1, 2], 1, {}) == [0, 1, 2]


def test_hard_label_students_take_no_part_in_the_pick():
    """Hard-label students (eval.hard_labels) of every value, with other validation orders:
    neither counted as a value's record nor compared."""
    recs = [rec("window_b0.1", 0, 80.0), rec("window_b0.5", 0, 90.0)]
    hard = [{**rec(m, 0, v), "objective": "ce"} for m, v in (("window_b0.1", 99.0), ("window_b0.5", 10.0),
                                                             ("window_b0.9", 99.0))]
    assert sweep_picks(recs + hard, NAMES, [0]) == {}  # b0.9 has only a hard-label student: no pick yet
    full = recs + [rec("window_b0.9", 0, 85.0)]
    assert sweep_picks(full + hard, NAMES, [0]) == sweep_picks(full, NAMES, [0]) == {("window", "c"): "window_b0.5"}


def test_which_runs_get_a_hard_label_student():
    import pytest

    from ccfs.config import load_config
    from ccfs.errors import ConfigError
    from ccfs.evaluate.run import hard_label_runs

    names = ["ccfs", "random", "window_b0.1", "window_b0.5", "full"]
    assert hard_label_runs(load_config(None), names) == set()  # off by default
    assert hard_label_runs(load_config(None, ["eval.hard_labels=true"]), names) == set(names)
    assert hard_label_runs(load_config(None, ["eval.hard_labels=[window,full]"]), names) == {
        "window_b0.1", "window_b0.5", "full"}
    assert load_config("fmnist-sweep").eval.hard_labels == ["ccfs", "self_evolved", "random", "full"]
    # under eval.objective=ce every student is a hard-label one: nothing to add
    assert hard_label_runs(load_config(None, ["eval.hard_labels=true", "eval.objective=ce"]), names) == set()
    with pytest.raises(ConfigError, match="random"):  # an unknown method, with the valid ones
        hard_label_runs(load_config(None, ["eval.hard_labels=[ranodm]"]), names)
    with pytest.raises(ConfigError, match="eval.hard_labels"):  # mixing is KD only
        load_config(None, ["eval.hard_labels=true", "train.mix=cutmix"])


# a records file (research/collect_records.py) takes a swept method only once its pick is settled
def _point(method, seed, val=80.0):
    return {"method": method, "model": "convnet_w32", "ipc": 55, "alpha": 0.1, "seed": seed, "objective": "kd",
            "final_acc": val, "val_acc": val}


def test_window_joins_once_every_beta_trained_on_the_pick_seeds():
    cfg = load_config("fmnist-sweep")  # five β, picked on seed 0 (eval.sweep_seeds 1)
    betas = [f"window_b{b:g}" for b in cfg.select.window_betas]
    partial = [_point("ccfs", 0), _point("random", 0)] + [_point(b, 0, 80 + i) for i, b in enumerate(betas[:3])]
    assert [r["method"] for r in settled(partial, cfg)] == ["ccfs", "random"]
    full = partial + [_point(b, 0, 70.0) for b in betas[3:]] + [_point(betas[2], 1)]
    assert [r["method"] for r in settled(full, cfg)] == [r["method"] for r in full]


def test_every_beta_on_every_seed_without_sweep_seeds():
    cfg = load_config("fmnist-sweep", ["eval.sweep_seeds=0", "eval.seeds=[0,1]"])
    betas = [f"window_b{b:g}" for b in cfg.select.window_betas]
    seed0 = [_point(b, 0) for b in betas]
    assert settled(seed0, cfg) == []
    assert len(settled(seed0 + [_point(b, 1) for b in betas], cfg)) == 2 * len(betas)

