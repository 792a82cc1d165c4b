"""bench/sweep_summary.py: per-seed records rebuilt from the sweep's recorded logs."""
import pytest

from bench.sweep_summary import from_log, merge

LOG = """select ccfs seed 0: 50 real + 5/class distilled in 12.0s
evaluate           ccfs    convnet_w32 seed 0: val 88.10%, test 88.05% (550 images, 56s)
evaluate window: window_b0.5 picked on validation over seed 0 (convnet_w32); only it trains on the other seeds
evaluate    window_b0.5    convnet_w32 seed 1: val 87.00%, test 86.50% (2750 images, 60s)
evaluate           full    convnet_w32 seed 2: val 89.95%, test 89.41% (55000 images, 180s)
"""


def test_student_lines_become_records_with_ipc_and_alpha():
    recs = {(r["method"], r["seed"]): r for r in merge(from_log(LOG))}
    assert set(recs) == {("ccfs", 0), ("window_b0.5", 1), ("full", 2)}
    ccfs = recs[("ccfs", 0)]
    assert (ccfs["ipc"], ccfs["alpha"], ccfs["final_acc"], ccfs["val_acc"]) == (55, 5 / 55, 88.05, 88.10)
    assert (recs[("window_b0.5", 1)]["ipc"], recs[("window_b0.5", 1)]["alpha"]) == (275, 0.0)
    assert recs[("full", 2)]["ipc"] == 55  # no IPC of its own: filed under the smallest, as the sweep does


def test_a_student_logged_twice_must_agree():
    assert len(merge(from_log(LOG + LOG))) == 3
    other = LOG.replace("test 88.05%", "test 88.06%")
    with pytest.raises(SystemExit, match="different accuracies"):
        merge(from_log(LOG + other))
