"""Atomic writes: a file or folder appears whole or not at all, and nothing is left behind."""
import pytest

from ccfs import artifacts
from ccfs.artifacts import atomic_dir, atomic_path, np_save, torch_save, write_text


class Boom(Exception):
    pass


def test_atomic_path_renames_fsynced_file_into_place(tmp_path, monkeypatch):
    synced = []
    real_fsync = artifacts.os.fsync
    monkeypatch.setattr(artifacts.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    with atomic_path(tmp_path / "sub" / "a.txt") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.name != "a.txt"
        tmp.write_text("new")
        assert not (tmp_path / "sub" / "a.txt").exists()  # not visible before the block ends
    assert (tmp_path / "sub" / "a.txt").read_text() == "new" and len(synced) == 1
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.txt"]


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_path_leaves_nothing_when_the_writer_raises(tmp_path, existing):
    target = tmp_path / "a.txt"
    if existing:
        target.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == (["a.txt"] if existing else [])
    if existing:
        assert target.read_text() == "old"


def test_writers_go_through_atomic_path(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise Boom
    monkeypatch.setattr(artifacts.torch, "save", fail)
    with pytest.raises(Boom):
        torch_save({"x": 1}, tmp_path / "t.pt")
    write_text(tmp_path / "a.txt", "hi")
    np_save(tmp_path / "a.npy", [1, 2])  # np.save would append .npy to a bare temp name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.txt"]


def test_atomic_dir_replaces_an_existing_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "stale.txt").write_text("old")
    with atomic_dir(tmp_path / "d") as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_atomic_dir_keeps_the_old_folder_when_the_writer_raises(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.txt").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "half.txt").write_text("half")
            raise Boom
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["old.txt"]
