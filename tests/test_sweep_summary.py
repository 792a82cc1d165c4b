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


def test_a_missing_input_is_a_one_line_error(tmp_path, monkeypatch):
    import sys

    from bench import sweep_summary
    monkeypatch.setattr(sys, "argv", ["sweep_summary", "--records", str(tmp_path / "nope.jsonl"),
                                      "--write", str(tmp_path / "out.jsonl")])
    with pytest.raises(SystemExit, match="no such file: .*nope.jsonl"):
        sweep_summary.main()
    assert not (tmp_path / "out.jsonl").exists()


def test_records_files_skip_a_line_cut_by_an_interruption(tmp_path):
    import json

    from bench.sweep_summary import read_records
    rec = {"method": "random", "model": "convnet_w32", "ipc": 55, "alpha": 0.0, "seed": 1,
           "final_acc": 87.0, "val_acc": 87.5, "images": 550, "commit": "x"}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(rec) + "\n" + json.dumps(rec)[:20])
    (r,) = read_records([path])
    assert r["final_acc"] == 87.0 and "commit" not in r and r["source"] == str(path)
    written = tmp_path / "written.jsonl"
    written.write_text(json.dumps({**r, "source": "log"}) + "\n")
    assert read_records([written])[0]["source"] == "log"  # a record keeps its first source


def test_rows_re_run_with_new_settings_replace_the_recorded_ones():
    from bench.sweep_summary import supersede
    found = merge(from_log(LOG))
    newer = [{**found[0], "final_acc": 88.5, "val_acc": 88.7, "source": "pair"}]
    out = supersede(found, newer)
    assert len(out) == 3
    ccfs = [r for r in out if r["method"] == "ccfs"]
    assert len(ccfs) == 1 and ccfs[0]["final_acc"] == 88.5 and ccfs[0]["source"] == "pair"
    assert [r for r in out if r["method"] != "ccfs"] == [r for r in found if r["method"] != "ccfs"]
