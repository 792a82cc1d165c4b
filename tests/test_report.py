"""Reports are pure functions of records and round logs: exact table strings from
hand-made records with known means and sample stds, valid PNG plots written atomically,
labels.csv rows that name the file holding each image, and a results.jsonl reader that
survives an interrupted write."""
from __future__ import annotations

import csv
import io
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from ccfs.artifacts import append_jsonl
from ccfs.distill.folder import export_png_folder
from ccfs.records import load as load_records, record_key
from ccfs.records import main_protocol, objective_of, unique
from ccfs.export import labels_csv
from ccfs.report import plots
from ccfs.report.tables import (fmt, group, label_robust_rows, label_robust_table, lead_table, lrs, mean_std,
                                oracle_picks, oracle_window, paired_differences, paired_table, verdict_lines,
                                ratio_curves, ratio_table, results_table, rounds_table, summary_table, unpaired)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORACLE = " ← oracle window (β picked on TEST acc (no validation split))"


def rec(method, model, ipc, alpha, seed, final, best):
    return {"method": method, "model": model, "ipc": ipc, "alpha": alpha, "seed": seed,
            "final_acc": final, "best_last20_acc": best}


# Means / sample stds by construction:
#   ccfs convnet 10: final 80, 82 -> 81.00 ± 1.41 (population std would be 1.00); best 81, 84 -> 82.50 ± 2.12
#   window convnet 10: b0.1 final mean 76 (but the higher paper's metric), b0.5 mean 78,
#     b0.9 mean 77 -> oracle b0.5 (the best is neither first nor last in the records)
#   window resnet 10: b0.1 60 > b0.5 55 -> oracle b0.1;  window convnet 50: only b0.5 -> oracle b0.5
RECORDS = [
    rec("window_b0.1", "convnet", 10, 0.0, 0, 75.0, 90.0),
    rec("ccfs", "convnet", 10, 0.2, 0, 80.0, 81.0),
    rec("window_b0.5", "convnet", 10, 0.0, 0, 78.0, 79.0),
    rec("random", "convnet", 10, 0.0, 0, 70.0, 72.0),
    rec("ccfs", "convnet", 10, 0.2 + 1e-12, 1, 82.0, 84.0),  # float noise in alpha: same group
    rec("window_b0.1", "convnet", 10, 0.0, 1, 77.0, 90.0),
    rec("window_b0.9", "convnet", 10, 0.0, 0, 77.0, 77.0),
    rec("window_b0.5", "convnet", 10, 0.0, 1, 78.0, 79.0),
    rec("window_b0.5", "resnet", 10, 0.0, 0, 55.0, 56.0),
    rec("window_b0.1", "resnet", 10, 0.0, 0, 60.0, 61.0),
    rec("window_b0.5", "convnet", 50, 0.0, 0, 85.0, 86.0),
    rec("selmatch", "convnet", 10, 0.2, 0, 79.0, 80.0),
]


# ---------------------------------------------------------------- mean_std / fmt / group

def test_mean_std_is_the_sample_std():
    m, s, n = mean_std([1.0, 2.0, 3.0, 4.0])
    assert (m, n) == (2.5, 4)
    assert s == pytest.approx((5 / 3) ** 0.5)  # divides by n - 1, not n
    assert mean_std([7.0]) == (7.0, 0.0, 1)


def test_fmt():
    assert fmt([80.0, 82.0]) == "81.00 ± 1.41 (n=2)"
    assert fmt([70.0]) == "70.00 (n=1)"
    assert fmt([]) == "–"


def test_group_by_method_model_ipc_rounded_alpha():
    g = group(RECORDS)
    assert g[("ccfs", "convnet", 10, 0.2)] == [80.0, 82.0]
    assert g[("window_b0.5", "convnet", 10, 0.0)] == [78.0, 78.0]
    assert group(RECORDS, "best_last20_acc")[("ccfs", "convnet", 10, 0.2)] == [81.0, 84.0]
    assert len(g) == 9  # 12 records, three pairs of seeds


# ---------------------------------------------------------------- oracle window

def test_oracle_window_is_best_mean_final_acc_per_model_and_ipc():
    assert oracle_window(RECORDS) == {("convnet", 10): "window_b0.5", ("resnet", 10): "window_b0.1",
                                      ("convnet", 50): "window_b0.5"}


def test_oracle_window_ignores_record_order_and_other_methods():
    assert oracle_window(RECORDS[::-1]) == oracle_window(RECORDS)
    assert oracle_window([r for r in RECORDS if not r["method"].startswith("window")]) == {}


def test_oracle_window_compares_values_on_the_seeds_they_share():
    """eval.sweep_seeds trains the pick on more seeds than the others: its lucky or unlucky
    extra seeds must not decide (nor undo) the pick."""
    val = {("window_b0.1", 0): 80.0, ("window_b0.3", 0): 81.0, ("window_b0.3", 1): 70.0, ("window_b0.3", 2): 70.0}
    records = [{**rec(m, "c", 10, 0.0, s, 50.0, None), "val_acc": v} for (m, s), v in val.items()]
    assert oracle_picks(records) == {("c", 10): ("window_b0.3", [0])}  # on all three seeds b0.1 would win
    table = results_table(records)
    assert "window_b0.3 ← oracle window (β picked on validation, seed 0)" in table
    assert "window_b0.1 ← oracle" not in table
    everywhere = records + [{**rec("window_b0.1", "c", 10, 0.0, s, 50.0, None), "val_acc": 75.0} for s in (1, 2)]
    assert oracle_picks(everywhere) == {("c", 10): ("window_b0.1", [0, 1, 2])}  # 76.7 against 73.7
    assert "oracle window (β picked on validation)" in results_table(everywhere)


# ---------------------------------------------------------------- results table

def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_results_table_final_epoch_accuracy_comes_first():
    table = results_table(RECORDS)
    header = table.splitlines()[0]
    assert header.index("final-epoch test acc % (primary)") < header.index("validation acc %") < header.index("paper's metric")
    assert ["ccfs", "convnet", "10", "0.2", "81.00 ± 1.41 (n=2)", "–", "82.50 ± 2.12 (n=2)"] in _rows(table)
    assert ["random", "convnet", "10", "0", "70.00 (n=1)", "–", "72.00 (n=1)"] in _rows(table)


def test_results_table_labels_exactly_the_oracle_windows():
    # window convnet 10: b0.9 has seed 0 only, so the values were compared on seed 0
    seed0 = ORACLE[:-1] + ", seed 0)"
    rows = {(r[0].removesuffix(ORACLE).removesuffix(seed0), r[1], r[2]): r[0].endswith((ORACLE, seed0))
            for r in _rows(results_table(RECORDS)) if r[0].startswith("window")}
    assert {r[0] for r in _rows(results_table(RECORDS)) if r[0].endswith(seed0)} == {"window_b0.5" + seed0}
    assert rows == {("window_b0.1", "convnet", "10"): False, ("window_b0.5", "convnet", "10"): True,
                    ("window_b0.9", "convnet", "10"): False, ("window_b0.1", "resnet", "10"): True,
                    ("window_b0.5", "resnet", "10"): False, ("window_b0.5", "convnet", "50"): True}


def test_results_table_row_order():
    methods = [r[0].split(" ← ")[0] for r in _rows(results_table(RECORDS))]
    assert methods[:2] == ["ccfs", "random"]
    # window rows stay together, betas in order, and come before selmatch (SelMatch's order)
    assert methods[2:] == ["window_b0.1", "window_b0.1", "window_b0.5", "window_b0.5", "window_b0.5",
                           "window_b0.9", "selmatch"]


# ---------------------------------------------------------------- summary table

def test_summary_table_keeps_only_oracle_windows():
    lines = summary_table(RECORDS).splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ccfs", "convnet"], ["random", "convnet"], ["oracle", "window_b0.1"], ["oracle", "window_b0.5"],
        ["oracle", "window_b0.5"], ["selmatch", "convnet"]]
    assert lines[0].split() == ["ccfs", "convnet", "ipc", "10", "α", "0.2", "final", "acc",
                                "81.00", "±", "1.41", "(n=2)"]
    assert lines[2].split()[2:5] == ["resnet", "ipc", "10"]
    assert lines[3].split()[2:5] == ["convnet", "ipc", "10"] and "78.00 ± 0.00 (n=2)" in lines[3]
    assert len({line.index("final acc") for line in lines}) == 1  # columns line up


# ---------------------------------------------------------------- rounds table

CLASSES = ["tee", "trouser", "pullover"]


def _round(j, test_acc, train_acc, cand, short, filled, stats, train_s, infer_s, **extra):
    return {"round": j, "filter_eval_acc": test_acc, "filter_pool_acc": train_acc, "candidates_per_class": cand,
            "chosen": 6, "shortfall_per_class": short, "filled_from_pool": filled, "score_stats": stats,
            "filter_train_seconds": train_s, "filter_infer_seconds": infer_s, "indices": [], **extra}


ROUNDS = [_round(1, None, None, [5, 1, 3], [0, 2, 0], 0, {"n": 6, "mean": 0.12345}, None, None),
          _round(2, 71.234, 88.0, [0, 7, 2], [3, 0, 1], 4, {"n": 0}, 12.34, 0.456, filter_inferred=12345)]


def test_rounds_table_rows():
    lines = rounds_table(ROUNDS, CLASSES).splitlines()
    assert lines[2] == "| 1 | – | – | 1 / 3 / 5 | 6 | 2 | 0 | 0.123 | – | – |"
    assert lines[3] == "| 2 | 71.23 | 88.00 (12 345) | 0 / 2 / 7 | 6 | 4 | 4 | – | 12.3 | 0.46 |"


def test_rounds_table_names_the_short_classes():
    last = rounds_table(ROUNDS, CLASSES).splitlines()[-1]
    assert last == ("Shortfalls (class ran out of candidates): round 1: trouser short by 2; "
                    "round 2: tee short by 3; round 2: pullover short by 1")
    no_short = [_round(1, 50.0, 60.0, [2, 2, 2], [0, 0, 0], 0, {"n": 6}, 1.0, 0.1)]
    assert "Shortfalls" not in rounds_table(no_short, CLASSES)


def test_rounds_table_unbalanced_shortfall_is_not_blamed_on_class_0():
    """select.balance=false keeps the total deficit in slot 0 of shortfall_per_class."""
    r = [_round(1, 50.0, 60.0, [2, 2, 2], [5, 0, 0], 0, {"n": 6}, 1.0, 0.1, balance=False)]
    last = rounds_table(r, CLASSES).splitlines()[-1]
    assert last == "Shortfalls (class ran out of candidates): round 1: all classes together short by 5"
    assert "tee" not in last


# ---------------------------------------------------------------- plots

def _assert_png_alone(path):
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 10


PLOT_ROUNDS = [{"round": 1, "filter_eval_acc": None, "filter_pool_acc": None, "indices": [0, 3, 4]},
               {"round": 2, "filter_eval_acc": 61.5, "filter_pool_acc": 70.0, "indices": []},
               {"round": 3, "filter_eval_acc": 72.0, "filter_pool_acc": 90.0, "indices": [1, 2, 5]}]


def test_filter_accuracy_plot(tmp_path):
    path = tmp_path / "plots" / "ccfs_filter_acc.png"  # the folder does not exist yet
    plots.filter_accuracy(PLOT_ROUNDS, path)
    _assert_png_alone(path)
    assert plt.get_fignums() == []  # the figure is closed


def test_chosen_difficulty_plot(tmp_path):
    path = tmp_path / "difficulty.png"
    plots.chosen_difficulty(PLOT_ROUNDS, np.linspace(0, 1, 6), "forgetting", path)
    _assert_png_alone(path)
    assert plt.get_fignums() == []


@pytest.mark.parametrize("channels", [1, 3])
def test_chosen_grid_plot(tmp_path, channels):
    images = np.random.default_rng(0).integers(0, 256, size=(6, channels, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = tmp_path / "chosen.png"
    plots.chosen_grid(PLOT_ROUNDS, images, labels, CLASSES, path=path, per_class=2)
    _assert_png_alone(path)
    assert plt.get_fignums() == []


# ---------------------------------------------------------------- labels.csv

def test_labels_csv_rows_name_the_file_holding_each_image(tmp_path):
    labels = [2, 0, 2, 1, 0, 2]  # class 3 has no images
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 4, 5), dtype=torch.uint8, generator=gen)  # [n, C, H, W], H != W
    out = export_png_folder(images, torch.tensor(labels), 4, tmp_path / "export")
    sources, train_idx = ["distilled", "distilled", "real", "real", "real", "real"], [-1, -1, 7, 3, 9, 0]
    classes = ["tee", "trouser", "pullover", "dress"]
    rows = list(csv.reader(io.StringIO(labels_csv(labels, sources, train_idx, classes))))
    assert rows[0] == ["file", "label", "class", "source", "train_index"]
    assert rows[1:3] == [["00002/00000.png", "2", "pullover", "distilled", "-1"],
                         ["00000/00000.png", "0", "tee", "distilled", "-1"]]
    for i, (file, label, name, src, ti) in enumerate(rows[1:]):
        assert (int(label), name, src, int(ti)) == (labels[i], classes[labels[i]], sources[i], train_idx[i])
        assert file.startswith(f"{labels[i]:05d}/")
        with Image.open(out / file) as img:
            assert np.array_equal(np.asarray(img), images[i, 0].numpy()), file
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert sorted(r[0] for r in rows[1:]) == on_disk  # every file listed once


# ---------------------------------------------------------------- results.jsonl

def test_load_records_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    assert load_records(path) == []
    a, b = rec("ccfs", "convnet", 10, 0.2, 0, 80.0, 81.0), rec("random", "convnet", 10, 0.0, 0, 70.0, 72.0)
    path.write_text(json.dumps(a) + "\n" + json.dumps(b) + "\n" + json.dumps(b)[:25])
    assert load_records(path) == [a, b]


def test_record_appended_after_a_truncated_line_survives(tmp_path):
    path = tmp_path / "results.jsonl"
    a, b = rec("ccfs", "convnet", 10, 0.2, 0, 80.0, 81.0), rec("random", "convnet", 10, 0.0, 0, 70.0, 72.0)
    path.write_text(json.dumps(a) + "\n" + json.dumps(b)[:25])  # the evaluation of b was interrupted
    append_jsonl(path, b)  # the resumed run redoes b
    assert load_records(path) == [a, b]


def test_record_key():
    r = dict(rec("ccfs", "convnet", 10, 0.2 + 1e-12, 1, 80.0, 81.0), settings="abc")
    assert record_key(r) == ("ccfs", "convnet", 10, 0.2, 1, "kd", "abc")
    assert record_key(dict(r, alpha=0)) == record_key(dict(r, alpha=0.0))
    assert record_key({k: v for k, v in r.items() if k != "settings"})[-1] is None
    for field, other in (("method", "random"), ("model", "resnet"), ("ipc", 50), ("alpha", 0.3),
                         ("seed", 2), ("settings", "xyz"), ("objective", "ce")):
        assert record_key(dict(r, **{field: other})) != record_key(r), field
    # a record from before the objective field is its run's eval.objective, KD without a config
    assert record_key(dict(r, objective="kd")) == record_key(r)
    assert record_key(dict(r, config={"eval": {"objective": "ce"}})) == record_key(dict(r, objective="ce"))


def test_paired_differences_pair_by_seed_ipc_and_alpha_and_full_with_every_ipc():
    """CCFS minus each method over the seeds both have; the full-data student (recorded at
    one point of a sweep) pairs with every IPC; a method with a distilled part pairs only at
    CCFS's α; an α sweep of CCFS gets rows per α."""
    records = [rec("ccfs", "c", 10, 0.1, 0, 80.0, None), rec("ccfs", "c", 10, 0.1, 1, 82.0, None),
               rec("ccfs", "c", 10, 0.2, 0, 81.0, None),
               rec("ccfs", "c", 50, 0.1, 0, 88.0, None),
               rec("random", "c", 10, 0.0, 0, 79.0, None), rec("random", "c", 10, 0.0, 1, 79.0, None),
               rec("random", "c", 10, 0.0, 2, 50.0, None),  # no CCFS seed 2: not paired
               rec("random_distilled", "c", 10, 0.1, 0, 78.0, None),
               rec("random_distilled", "c", 10, 0.2, 0, 70.0, None),
               rec("full", "c", 10, 0.0, 0, 90.0, None),
               rec("random", "other", 10, 0.0, 0, 10.0, None)]  # another model: not paired
    rows = {(m, ipc, a): (round(mean, 6), n) for m, _, ipc, a, mean, _, n in paired_differences(records)}
    assert rows == {("full", 10, 0.1): (-10.0, 1), ("random", 10, 0.1): (2.0, 2),
                    ("random_distilled", 10, 0.1): (2.0, 1),
                    ("full", 10, 0.2): (-9.0, 1), ("random", 10, 0.2): (2.0, 1),
                    ("random_distilled", 10, 0.2): (11.0, 1),
                    ("full", 50, 0.1): (-2.0, 1)}
    table = paired_table(records)
    # diffs 1 and 3: mean 2, sd 1.414, half-width t(1) · 1.414 / √2 = 12.71; 5 seeds: 2.776 · 1.414 / √5 = 1.76 < 2
    assert "| random | c | 10 | 0.1 | +2.00 ± 12.71, not resolved with 2 seeds | – | 2 | about 5 |" in table
    assert paired_table([rec("random", "c", 10, 0.0, 0, 1.0, None)]) == ""


def test_verdicts_call_a_lead_only_where_the_interval_excludes_zero():
    """diffs 1.0, 1.2, 0.8 (test) and 0.5, -0.5, 0.0 (validation): mean 1.00, sd 0.20, half-width
    4.303 · 0.2 / √3 = 0.50 -> ahead on test; mean 0 on validation -> not resolved."""
    records = []
    for seed, (d, v) in enumerate([(1.0, 0.5), (1.2, -0.5), (0.8, 0.0)]):
        records += [{**rec("ccfs", "c", 10, 0.2, seed, 80.0 + d, None), "val_acc": 70.0 + v},
                    {**rec("random", "c", 10, 0.0, seed, 80.0, None), "val_acc": 70.0}]
    assert verdict_lines(records) == ["ccfs − random (c, IPC 10): +1.00 ± 0.50, ahead (test, 95 % interval)"]
    table = paired_table(records)
    assert "| +1.00 ± 0.50, ahead | +0.00 ± 1.24, not resolved with 3 seeds | 3 | 3 (resolved) |" in table
    assert verdict_lines([{**r, "final_acc": 80.0 - (r["method"] == "ccfs")} for r in records]) == \
        ["ccfs − random (c, IPC 10): -1.00 ± 0.00, behind (test, 95 % interval)"]


def test_ratio_table_has_a_column_per_ipc_and_full_in_every_column():
    records = [rec("ccfs", "c", 10, 0.1, 0, 80.0, None), rec("ccfs", "c", 10, 0.1, 1, 82.0, None),
               rec("ccfs", "c", 50, 0.1, 0, 88.0, None), rec("random", "c", 50, 0.0, 0, 85.0, None),
               rec("full", "c", 10, 0.0, 0, 90.0, None)]
    lines = ratio_table(records, {10: 1.0, 50: 5.0}).splitlines()
    assert lines[0] == "| method | model | α | IPC 10 (1.0 %) | IPC 50 (5.0 %) |"
    assert lines[2:] == ["| full | c |  | 90.00 (n=1) | 90.00 (n=1) |",
                         "| ccfs | c | 0.1 | 81.00 ± 1.41 (n=2) | 88.00 (n=1) |",
                         "| random | c |  | – | 85.00 (n=1) |"]


def test_ratio_curves_follow_the_alpha_asked_for():
    """int(IPC·α)/IPC differs between IPCs; a curve is one α as asked, over every IPC."""
    records = [{**rec("ccfs", "c", 55, 5 / 55, 0, 88.0, None), "alpha_set": 0.1},
               {**rec("ccfs", "c", 550, 0.1, 0, 89.0, None), "alpha_set": 0.1},
               {**rec("random", "c", 55, 0.0, 0, 87.0, None), "alpha_set": 0.0},
               {**rec("full", "c", 55, 0.0, 0, 90.0, None), "alpha_set": 0.0}]
    curves, full = ratio_curves(records, {55: 1.0, 550: 10.0})
    assert curves == {"ccfs c": [(1.0, 88.0, 0.0), (10.0, 89.0, 0.0)], "random c": [(1.0, 87.0, 0.0)]}
    assert full == 90.0
    two = records + [{**rec("ccfs", "c", 55, 0.2, 0, 86.0, None), "alpha_set": 0.2}]
    assert set(ratio_curves(two, {55: 1.0, 550: 10.0})[0]) == {"ccfs c α 0.1", "ccfs c α 0.2", "random c"}
    seeds = records + [{**rec("random", "c", 55, 0.0, 1, 89.0, None), "alpha_set": 0.0}]
    (x, mean, half), = ratio_curves(seeds, {55: 1.0, 550: 10.0})[0]["random c"]  # the band: the 95 % interval
    assert (x, mean) == (1.0, 88.0) and half == pytest.approx(12.706 * 2 ** 0.5 / 2 ** 0.5)


def test_the_sweep_table_shows_one_oracle_window_row_with_the_beta_picked_on_validation():
    """Every β is trained; the headline table and plot show the oracle's pick per IPC (by
    validation accuracy), labelled with its β, not one row per β."""
    val = [60.0, 65.0, 81.0, 80.0, 74.0]  # test says β 0.1 at IPC 10, validation says 0.3
    records = [{**r, "val_acc": v} for r, v in zip(
        [rec("window_b0.1", "c", 10, 0.0, 0, 70.0, None), rec("window_b0.3", "c", 10, 0.0, 0, 60.0, None),
         rec("window_b0.1", "c", 50, 0.0, 0, 80.0, None), rec("window_b0.3", "c", 50, 0.0, 0, 79.0, None),
         rec("ccfs", "c", 10, 0.1, 0, 75.0, None)], val)]
    lines = ratio_table(records, {10: 1.0, 50: 5.0}).splitlines()
    assert lines[2:] == ["| ccfs | c | 0.1 | 75.00 (n=1) | – |",
                         "| oracle window | c |  | 60.00 (n=1, β 0.3) | 80.00 (n=1, β 0.1) |"]
    curves, _ = ratio_curves(records, {10: 1.0, 50: 5.0})
    assert curves["oracle window c"] == [(1.0, 60.0, 0.0), (5.0, 80.0, 0.0)]


def test_sweep_plot_axis_is_logarithmic_only_over_a_factor_of_ten():
    from ccfs.report.plots import log_axis
    assert log_axis([0.18, 1.0, 5.0, 10.0, 20.0])
    assert not log_axis([1.0, 5.0])  # less than 10x: linear
    assert not log_axis([0.0, 0.1, 0.5])  # α from 0: no log
    assert not log_axis([])


# ---------------------------------------------------------------- hard-label students (DD-Ranking's IOR, HLR, LRS)

def ce(r: dict, final: float) -> dict:
    """The hard-label student beside KD record `r`: the same key but its objective."""
    return {**r, "objective": "ce", "final_acc": final, "best_last20_acc": None,
            **({"val_acc": r["val_acc"] - 30} if r.get("val_acc") is not None else {})}


def test_objective_of_and_the_main_protocol():
    kd, old = {**RECORDS[0], "objective": "kd"}, RECORDS[1]  # a record from before the field: its run's, else KD
    hard = ce(RECORDS[1], 10.0)
    assert [objective_of(r) for r in (kd, old, hard)] == ["kd", "kd", "ce"]
    assert objective_of({**old, "config": {"eval": {"objective": "ce"}}}) == "ce"
    assert main_protocol([kd, hard, old]) == [kd, old]
    assert main_protocol([hard]) == [hard]  # a run with eval.objective ce: its own students
    assert unique([old, hard, {**old}]) == [old, hard]  # a KD and a hard-label student are two students


def test_no_table_mixes_hard_label_students_into_the_kd_ones():
    """Hard-label students far below (and, for the oracle, with other validation orders) the
    KD ones: every KD table, pair, verdict and pick is what it is without them."""
    val = {"window_b0.1": 70.0, "window_b0.5": 60.0, "window_b0.9": 65.0}
    kd = [{**r, "val_acc": val.get(r["method"], 50.0) + r["seed"]} for r in RECORDS]
    hard = [ce(r, r["final_acc"] - 40.0) for r in kd]
    hard = [{**h, "val_acc": 200.0 - h["val_acc"]} for h in hard]  # the hard-label students would pick another β
    both = kd + hard
    assert group(both) == group(kd) and group(both, "val_acc") == group(kd, "val_acc")
    assert oracle_picks(both) == oracle_picks(kd) and oracle_window(both) == oracle_window(kd)
    assert paired_differences(both) == paired_differences(kd)
    assert paired_differences(both, field="val_acc") == paired_differences(kd, field="val_acc")
    assert paired_table(both) == paired_table(kd) and verdict_lines(both) == verdict_lines(kd)
    assert results_table(both) == results_table(kd) and summary_table(both) == summary_table(kd)
    ratio = {10: 1.0, 50: 5.0}
    assert ratio_table(both, ratio) == ratio_table(kd, ratio) and ratio_curves(both, ratio) == ratio_curves(kd, ratio)
    assert lead_table(both, ratio) == lead_table(kd, ratio)
    assert "81.00 ± 1.41 (n=2)" in results_table(both)  # ccfs: KD 80, 82, not with the hard-label 40, 42


def _lr(method, ipc, alpha, seed, final, objective):
    return {**rec(method, "c", ipc, alpha, seed, final, None), "objective": objective}


# Seeds 0, 1. KD: ccfs 80, 82; random 78, 79. Hard labels: ccfs 70, 72; random 65, 69; full 90, 91
# (and a KD full-data student that HLR must not read); window β 0.5 is the KD oracle's pick.
LR = [_lr("ccfs", 10, 0.1, 0, 80.0, "kd"), _lr("ccfs", 10, 0.1, 1, 82.0, "kd"),
      _lr("random", 10, 0.0, 0, 78.0, "kd"), _lr("random", 10, 0.0, 1, 79.0, "kd"),
      _lr("ccfs", 10, 0.1, 0, 70.0, "ce"), _lr("ccfs", 10, 0.1, 1, 72.0, "ce"),
      _lr("random", 10, 0.0, 0, 65.0, "ce"), _lr("random", 10, 0.0, 1, 69.0, "ce"),
      _lr("full", 10, 0.0, 0, 90.0, "ce"), _lr("full", 10, 0.0, 1, 91.0, "ce"), _lr("full", 10, 0.0, 0, 50.0, "kd"),
      _lr("window_b0.1", 10, 0.0, 0, 70.0, "kd"), _lr("window_b0.5", 10, 0.0, 0, 77.0, "kd"),
      _lr("window_b0.1", 10, 0.0, 0, 99.0, "ce"), _lr("window_b0.5", 10, 0.0, 0, 60.0, "ce")]


def test_lrs_is_dd_rankings_normalised_exponential():
    e = 2.718281828459045
    assert lrs(0.0, 0.0) == pytest.approx((1 - 1 / e) / (e - 1 / e))  # 0.2689
    assert lrs(1.0, -1.0) == pytest.approx(1.0) and lrs(-1.0, 1.0) == pytest.approx(0.0)
    # IOR 0.02, HLR 0.20: a = 0.01 - 0.10 = -0.09, e^-0.09 = 0.913931, (0.913931 - 0.367879) / 2.350402 = 0.232323
    assert lrs(0.02, 0.20) == pytest.approx(0.232323, abs=1e-6)


def test_label_robust_rows_by_hand():
    rows = {r["method"]: r for r in label_robust_rows(LR)}
    assert set(rows) == {"ccfs", "random", "oracle window"}  # the full data is the reference, not a row
    c = rows["ccfs"]
    assert (c["ipc"], c["alpha"], c["kd"], c["ce"]) == (10, 0.1, [80.0, 82.0], [70.0, 72.0])
    # IOR KD: 80 - 78 = 2, 82 - 79 = 3 -> 2.5, sd 0.7071; hard labels: 70 - 65 = 5, 72 - 69 = 3 -> 4, sd 1.4142
    assert c["ior_kd"] == pytest.approx((2.5, 0.5 ** 0.5, 2)) and c["ior_ce"] == pytest.approx((4.0, 2 ** 0.5, 2))
    # HLR against the hard-label full data: 90 - 70 = 20, 91 - 72 = 19 -> 19.5 (never the KD full-data student's 50)
    assert c["hlr"] == pytest.approx((19.5, 0.5 ** 0.5, 2))
    # LRS per seed: a = 0.01 - 0.10 = -0.09 -> 0.232323; a = 0.015 - 0.095 = -0.08 -> 0.236231; mean 0.234277
    assert c["lrs"][0] == pytest.approx(0.234277, abs=1e-6) and c["lrs"][2] == 2
    r = rows["random"]
    assert r["ior_kd"] is None and r["ior_ce"] is None  # 0 by definition
    # HLR 25, 22 -> 23.5; LRS with IOR 0: a = -0.125 -> 0.218949, a = -0.11 -> 0.224623
    assert r["hlr"] == pytest.approx((23.5, 4.5 ** 0.5, 2)) and r["lrs"][0] == pytest.approx(0.221786, abs=1e-6)
    w = rows["oracle window"]  # β 0.5, the KD pick (77 > 70), with its own hard-label student, not β 0.1's 99
    assert (w["kd"], w["ce"]) == ([77.0], [60.0])
    assert w["ior_kd"] == (-1.0, 0.0, 1) and w["ior_ce"] == (-5.0, 0.0, 1) and w["hlr"] == (30.0, 0.0, 1)


def test_label_robust_table():
    lines = label_robust_table(LR).splitlines()
    assert lines[0].startswith("| method | model | IPC | α | KD acc % | hard-label acc % | IOR, KD")
    # 95 % half-widths: IOR KD t(1) · 0.7071 / √2 = 6.35; hard labels 12.71; HLR 6.35;
    # LRS t(1) · 0.002763 / √2 = 2.48 %
    assert lines[2] == ("| ccfs | c | 10 | 0.1 | 81.00 ± 1.41 (n=2) | 71.00 ± 1.41 (n=2) | "
                        "+2.50 ± 6.35, not resolved with 2 seeds | +4.00 ± 12.71, not resolved with 2 seeds | "
                        "+19.50 ± 6.35 (n=2) | 23.43 ± 2.48 (n=2) |")
    assert lines[3].startswith("| random | c | 10 | 0 | 78.50 ± 0.71 (n=2) | 67.00 ± 2.83 (n=2) | "
                               "0 (the reference) | 0 (the reference) | +23.50 ± 19.06 (n=2) | 22.18 ± ")
    # one seed: no std, no interval (never "± 0.00" nor "± inf")
    assert lines[4].startswith("| oracle window | c | 10 | 0 | 77.00 (n=1) | 60.00 (n=1) | "
                               "-1.00, one seed: no interval | -5.00, one seed: no interval | +30.00 (n=1) | ")
    assert "inf" not in lines[4] and "± 0.00" not in lines[4]
    assert label_robust_table([r for r in LR if r["objective"] == "kd"]) == ""  # no hard-label students: no table


def test_students_pair_only_over_one_teacher_and_the_report_says_which_were_refused():
    """Seed 0's students share a teacher and pair; seed 1's had different teachers and do not;
    records without the hash (recorded before it existed) pair."""
    records = [{**rec("ccfs", "c", 10, 0.2, 0, 81.0, None), "teacher_sha1": "aaa"},
               {**rec("random", "c", 10, 0.0, 0, 80.0, None), "teacher_sha1": "aaa"},
               {**rec("ccfs", "c", 10, 0.2, 1, 90.0, None), "teacher_sha1": "aaa"},
               {**rec("random", "c", 10, 0.0, 1, 70.0, None), "teacher_sha1": "bbb"},
               rec("ccfs", "c", 10, 0.2, 2, 83.0, None), {**rec("random", "c", 10, 0.0, 2, 80.0, None), "teacher_sha1": "bbb"}]
    assert [(m, round(mean, 6), n) for m, _, _, _, mean, _, n in paired_differences(records)] == [("random", 2.0, 2)]
    assert unpaired(records) == ["ccfs − random (c, IPC 10): seed 1 not paired: the two students had different "
                                 "teachers or distilled images"]
    assert unpaired(records[:2]) == []


def test_students_with_distilled_images_pair_only_over_the_same_ones():
    """Seed 0: both sets hold the same distilled images and pair; seed 1: different distilled
    images, refused; a set without any (random) pairs with either."""
    records = [{**rec("ccfs", "c", 10, 0.2, 0, 81.0, None), "distilled_sha1": "d1"},
               {**rec("random_distilled", "c", 10, 0.2, 0, 80.0, None), "distilled_sha1": "d1"},
               {**rec("ccfs", "c", 10, 0.2, 1, 90.0, None), "distilled_sha1": "d2"},
               {**rec("random_distilled", "c", 10, 0.2, 1, 70.0, None), "distilled_sha1": "d1"},
               rec("random", "c", 10, 0.0, 0, 79.0, None), rec("random", "c", 10, 0.0, 1, 78.0, None)]
    got = {m: (round(mean, 6), n) for m, _, _, _, mean, _, n in paired_differences(records)}
    assert got == {"random_distilled": (1.0, 1), "random": (7.0, 2)}
    assert unpaired(records) == ["ccfs − random_distilled (c, IPC 10): seed 1 not paired: the two students had "
                                 "different teachers or distilled images"]


def test_differences_over_teachers_take_the_teacher_as_the_unit():
    """a − b pairs only within one teacher and seed; the answer is the mean of the teachers'
    means with a t interval over the teachers (2 degrees of freedom for 3), the pooled pairs
    are for reference; a teacher's student without a partner over that teacher is left out."""
    from ccfs.report.tables import across_teachers, teacher_table

    diffs = {"t1": [0.5, 0.7, 0.6], "t2": [0.1, 0.3, 0.2], "t3": [-0.2, 0.0, -0.1]}
    teacher_seeds = {"t1": 2, "t2": 0, "t3": 1}  # listed by the teacher's seed, not its hash
    recs = []
    for t, ds in diffs.items():
        for seed, d in enumerate(ds):
            base = {"model": "m", "ipc": 275, "alpha": 0.1, "seed": seed, "objective": "kd", "teacher_sha1": t,
                    "teacher_seed": teacher_seeds[t]}
            recs += [{**base, "method": "ccfs", "final_acc": 80 + d, "val_acc": 81 + d},
                     {**base, "method": "self_evolved", "alpha": 0.0, "final_acc": 80.0, "val_acc": 81.0}]
    recs.append({"model": "m", "ipc": 275, "alpha": 0.1, "seed": 3, "objective": "kd", "teacher_sha1": "t4",
                 "method": "ccfs", "final_acc": 99.0, "val_acc": 99.0})  # no partner over t4
    (row,) = across_teachers(recs, "ccfs", "self_evolved")
    assert (row["teachers"], row["pairs"]) == (3, 9)
    assert [(t, round(d, 6)) for t, d, _ in row["per_teacher"]] == [("seed 0", 0.2), ("seed 1", -0.1), ("seed 2", 0.6)]
    mean, std, n = row["over_teachers"]
    assert n == 3 and mean == pytest.approx(0.7 / 3) and std == pytest.approx(0.351188, abs=1e-5)
    assert row["pooled"][2] == 9
    table = teacher_table(recs, "ccfs", "self_evolved", {275: 5.0})
    half = 4.303 * 0.351188 / 3 ** 0.5
    assert f"+0.23 ± {half:.2f}, not resolved with 3 teachers" in table
    assert "+0.23 ± 0.24, not resolved with 9 pairs" in table  # pooled: t 2.306 · 0.316 / 3 (reference only)
    assert "| m | 275 (5 %) | seed 0: +0.20 (n=3), seed 1: -0.10 (n=3), seed 2: +0.60 (n=3) |" in table


def test_the_chosen_grid_is_one_picture_with_each_image_in_its_cell():
    images = np.random.default_rng(0).integers(0, 256, size=(6, 1, 3, 2), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    grid, starts = plots.mosaic(PLOT_ROUNDS, images, labels, 3, per_class=2, gap=1, block_gap=4)
    # cells 2 wide + 1 gap: a block is 2·3 − 1 + 4 = 9 wide; 3 rounds: 27 − 4; rows 3 + 1 high
    assert grid.shape == (3 * 4 - 1, 3 * 9 - 4, 3) and starts == [0, 9, 18]
    cell = lambda cls, block, k: grid[cls * 4:cls * 4 + 3, starts[block] + k * 3:starts[block] + k * 3 + 2]  # noqa: E731
    # round 1 chose rows 0, 3, 4: class 0 -> 0 then 3, class 1 -> 4; round 2 nothing; round 3 rows 1, 2, 5
    for cls, block, k, row in [(0, 0, 0, 0), (0, 0, 1, 3), (1, 0, 0, 4), (1, 2, 0, 1), (2, 2, 0, 2), (2, 2, 1, 5)]:
        assert (cell(cls, block, k) == images[row, 0][..., None]).all(), (cls, block, k)
    for cls, block, k in [(1, 0, 1), (2, 0, 0), (0, 1, 0), (0, 2, 0)]:
        assert (cell(cls, block, k) == 255).all(), (cls, block, k)  # nothing chosen: white
