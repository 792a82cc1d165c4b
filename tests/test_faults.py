"""Faults end in one line and lose nothing: a full disk, a read-only run directory, damaged
artifacts. The disk cases run `ccfs` in a private mount namespace over a small tmpfs
(`unshare -m`, as root, which CI is); they are skipped where namespaces are not allowed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ccfs.cli import main
from conftest import write_fake_fmnist

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["tiny", "select.method=[random_distilled]", "progress=false"]


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(not _namespaces_work(), reason="needs root and mount namespaces (unshare -m)")


def _in_namespace(tmp_path: Path, script: str) -> dict[str, str]:
    """Run `script` (bash) in a private mount namespace with $DISK a tmpfs mount point, $CCFS
    the ccfs command and $LOG a folder for what the test reads back; returns LOG's files."""
    disk, log = tmp_path / "disk", tmp_path / "log"
    disk.mkdir()
    log.mkdir()
    env = {**os.environ, "DISK": str(disk), "LOG": str(log), "PYTHONPATH": str(ROOT),
           "CCFS": f"{sys.executable} -m ccfs"}
    done = subprocess.run(["unshare", "-m", "bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return {p.name: p.read_text() for p in log.iterdir()}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ccfs: error: ") and "Traceback" not in err, err
    return lines[0]


@needs_namespace
def test_a_full_disk_ends_in_one_line_and_the_same_command_finishes_once_there_is_room(tmp_path):
    root = write_fake_fmnist(tmp_path / "fmnist")
    cmd = f"$CCFS run {' '.join(ARGS)} data.root={root} out=$DISK/run"
    logs = _in_namespace(tmp_path, f"""
        mount -t tmpfs -o size=520k tmpfs "$DISK"
        {cmd} > "$LOG/out1" 2> "$LOG/err1"; echo $? > "$LOG/rc1"
        find "$DISK" -name '.*tmp*' > "$LOG/leftover"
        sha1sum "$DISK/run/teacher/model.pt" > "$LOG/teacher1"
        mount -o remount,size=64m "$DISK"
        {cmd} > "$LOG/out2" 2> "$LOG/err2"; echo $? > "$LOG/rc2"
        sha1sum "$DISK/run/teacher/model.pt" > "$LOG/teacher2"
        ls "$DISK/run/select/random_distilled/seed0" > "$LOG/selection"
    """)
    assert logs["rc1"].strip() == "1", logs["out1"]
    assert "teacher: test acc" in logs["out1"], logs["out1"]  # the tmpfs holds the teacher, not the whole run
    line = _one_line(logs["err1"])
    assert "no space left on the device" in line and str(tmp_path / "disk" / "run") in line
    assert "run the same command again" in line
    assert logs["leftover"] == ""  # no temporary file left behind
    assert logs["rc2"].strip() == "0", logs["err2"]
    assert "teacher: done already" in logs["out2"] and logs["teacher1"] == logs["teacher2"]  # nothing redone
    assert "selected_indices.json" in logs["selection"]


@needs_namespace
def test_a_read_only_run_directory_ends_in_one_line_and_resumes_once_writable(tmp_path):
    root = write_fake_fmnist(tmp_path / "fmnist")
    args = f"{' '.join(ARGS)} data.root={root} out=$DISK/run"
    logs = _in_namespace(tmp_path, f"""
        mount -t tmpfs -o size=64m tmpfs "$DISK"
        $CCFS teacher {args} > /dev/null 2>&1; echo $? > "$LOG/rc0"
        mount -o remount,ro "$DISK"
        $CCFS distill {args} > "$LOG/out1" 2> "$LOG/err1"; echo $? > "$LOG/rc1"
        mount -o remount,rw "$DISK"
        $CCFS distill {args} > "$LOG/out2" 2> "$LOG/err2"; echo $? > "$LOG/rc2"
        ls "$DISK/run/distill" > "$LOG/distill"
    """)
    assert logs["rc0"].strip() == "0"
    assert logs["rc1"].strip() == "1"
    line = _one_line(logs["err1"])
    assert "Read-only file system" in line and "make the folder writable" in line
    assert logs["rc2"].strip() == "0", logs["err2"]
    assert "images.pt" in logs["distill"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    mp = pytest.MonkeyPatch()
    mp.setenv("CCFS_CACHE", str(base / "cache"))
    root = write_fake_fmnist(base / "fmnist")
    out = base / "run"
    assert main(["run", *ARGS, f"data.root={root}", f"out={out}"]) == 0
    yield root, out
    mp.undo()


@pytest.mark.parametrize("name", ["teacher/model.pt", "teacher/scores.npz", "teacher/correct_indices.npy",
                                  "distill/images.pt", "select/random_distilled/seed0/meta.json"])
def test_a_damaged_artifact_ends_in_one_line_naming_it_and_what_to_delete(finished, tmp_path, capsys, name):
    root, src = finished
    out = tmp_path / "run"
    shutil.copytree(src, out)
    path = out / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut in half
    (out / "results.jsonl").unlink()  # the students train again: every artifact is read
    capsys.readouterr()
    assert main(["evaluate", *ARGS, f"data.root={root}", f"out={out}"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and "damaged" in line and f"delete the folder {path.parent}" in line
    if name == "teacher/model.pt":  # the hint works: with the folder gone, the same command finishes
        shutil.rmtree(path.parent)
        assert main(["run", *ARGS, f"data.root={root}", f"out={out}"]) == 0


def test_a_damaged_resume_file_starts_the_training_again(tmp_path, capsys):
    from ccfs.config import Recipe
    from ccfs.data.datasets import Split
    from ccfs.models import create_model
    from ccfs.objectives import CrossEntropy
    from ccfs.train import fit

    g = torch.Generator().manual_seed(0)
    data = Split(torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(32) % 4)
    recipe = Recipe(epochs=2, batch_size=8, augment="none")
    (tmp_path / "resume.pt").write_bytes(b"not a checkpoint")

    def train():
        torch.manual_seed(0)
        model = create_model("convnet_w32", 4, 1, 8)
        fit(model, data, recipe, CrossEntropy(), mean=(0.5,), std=(0.25,), seed=0, progress=False,
            resume=tmp_path / "resume.pt")
        return model.state_dict()

    damaged = train()
    assert "cannot be read" in capsys.readouterr().out
    (tmp_path / "resume.pt").unlink()
    clean = train()
    assert all(torch.equal(damaged[k], clean[k]) for k in clean)
