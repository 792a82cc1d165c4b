"""torchrun on the CPU (gloo, 2 processes, tiny data): a 2-rank run writes what a 1-rank
run writes, students are spread over the ranks with the same records, and a second launch
on a held run directory stops at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import write_fake_fmnist

ARGS = ["select.method=[ccfs,random]", "eval.seeds=[0,1,2]", "threads=1", "eval.full_epochs=1"]


def ccfs_cmd(stage, root, out, *extra, ranks=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                "--master_port", str(29500 + os.getpid() % 1000)] if ranks > 1 else [sys.executable]
    return [*launcher, "-m", "ccfs", stage, "tiny", f"data.root={root}", f"out={out}", *ARGS, *extra]


def run(cmd, cache, **kw):
    env = {**os.environ, "CCFS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **kw)


def results(out):
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(r["method"], r["seed"]): r["final_acc"] for r in recs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    root = write_fake_fmnist(base / "fmnist")
    one, two = base / "one", base / "two"
    a = run(ccfs_cmd("run", root, one), base / "cache")
    assert a.returncode == 0, a.stderr[-2000:]
    b = run(ccfs_cmd("run", root, two, ranks=2), base / "cache")
    assert b.returncode == 0, b.stderr[-2000:]
    return root, base, one, two, b.stdout


def test_two_ranks_write_the_same_artifacts(runs):
    _, _, one, two, stdout = runs
    assert stdout.splitlines()[0] == "distributed: 2 ranks, gloo"
    for name in ("ccfs", "random"):
        a = json.loads((one / "select" / name / "selected_indices.json").read_text())
        b = json.loads((two / "select" / name / "selected_indices.json").read_text())
        assert a == b
    for f in ("teacher/metrics.json", "teacher/correct_indices.npy", "distill/images.pt"):
        assert (one / f).is_file() and (two / f).is_file()
    assert json.loads((one / "teacher/metrics.json").read_text())["test_acc"] == \
        json.loads((two / "teacher/metrics.json").read_text())["test_acc"]


def test_two_ranks_train_the_same_students(runs):
    _, _, one, two, _ = runs
    assert results(one) == results(two)  # 6 students, 3 waves of 2, same accuracies
    assert len((two / "results.jsonl").read_text().splitlines()) == 6  # each written once, by rank 0


def test_a_second_launch_on_a_held_run_directory_stops(runs):
    root, base, _, _, _ = runs
    out = base / "held"
    first = subprocess.Popen(ccfs_cmd("run", root, out, "train.epochs=30"),
                             env={**os.environ, "CCFS_CACHE": str(base / "cache")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until the first one holds the lock
            if (out / ".lock").is_file() and (out / ".lock").read_text():
                break
            time.sleep(0.1)
        t0 = time.perf_counter()
        second = run(ccfs_cmd("run", root, out, ranks=2), base / "cache")
        assert second.returncode != 0 and "in use by" in second.stderr
        assert time.perf_counter() - t0 < 60
    finally:
        first.kill()
        first.wait()
