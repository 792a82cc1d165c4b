"""bench.compile --compare: students of two run directories paired by (method, IPC, seed)."""
from __future__ import annotations

import json

from bench.compile import compare, students


def _write(run, point, recs):
    (run / point).mkdir(parents=True)
    (run / point / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def _rec(method, ipc, seed, secs, val, test):
    return {"method": method, "ipc": ipc, "seed": seed, "train_seconds": secs, "val_acc": val, "final_acc": test,
            "model": "convnet_w32", "alpha": 0.0}


def test_compare_pairs_students_across_points_and_reports_ratios(tmp_path, capsys):
    eager, comp = tmp_path / "e", tmp_path / "c"
    _write(eager, "ipc55_a0.1", [_rec("random", 55, 0, 100, 87.0, 86.0), _rec("random", 55, 1, 100, 88.0, 87.0)])
    _write(eager, "ipc1100_a0.1", [_rec("random", 1100, 0, 300, 90.0, 89.0)])
    _write(comp, "ipc55_a0.1", [_rec("random", 55, 0, 80, 87.5, 86.0)])  # seed 1 missing: not paired
    _write(comp, "ipc1100_a0.1", [_rec("random", 1100, 0, 210, 89.0, 89.5)])
    assert set(students(eager)) == {("random", 55, 0), ("random", 55, 1), ("random", 1100, 0)}
    compare(eager, comp)
    out = capsys.readouterr().out
    assert "| random | 55 | 0 | 100 | 80 | 0.80 | 87.00 / 87.50 | 86.00 / 86.00 |" in out
    assert "| random | 1100 | 1 | 0.70 | -1.00 ± 0.00 | +0.50 ± 0.00 |" in out
    assert "| all |  | 2 | 0.72 | -0.25 ± 1.06 | +0.25 ± 0.35 |" in out
