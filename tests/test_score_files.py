"""Score files: round trips of every format and one test per user error."""
import numpy as np
import pytest
import torch

from ccfs.errors import DataError
from ccfs.teacher.score_files import load_score_file, save_forgetting_npy, save_scores

N = 12
LABELS = torch.arange(N) % 3  # [N]
SCORES = np.linspace(0.0, 5.5, N, dtype=np.float32)


# ----------------------------------------------------------------------------- round trips


def test_forgetting_npy_round_trip(tmp_path):
    save_forgetting_npy(tmp_path / "forget.npy", torch.from_numpy(SCORES))
    name, arr = load_score_file(tmp_path / "forget.npy", LABELS)
    assert name == "forgetting" and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, SCORES)
    assert [p.name for p in tmp_path.iterdir()] == ["forget.npy"]  # no .tmp left


def test_official_float64_and_int_npy_load_as_float32(tmp_path):
    for dtype in (np.float64, np.int64):
        np.save(tmp_path / "f.npy", np.arange(N, dtype=dtype))
        name, arr = load_score_file(tmp_path / "f.npy", LABELS)
        assert name == "forgetting" and arr.dtype == np.float32 and arr.tolist() == list(range(N))


def test_npy_can_be_named(tmp_path):
    np.save(tmp_path / "e.npy", SCORES)
    assert load_score_file(tmp_path / "e.npy", LABELS, name="el2n")[0] == "el2n"
    with pytest.raises(DataError, match="'hardness' is not a known score"):
        load_score_file(tmp_path / "e.npy", LABELS, name="hardness")


def test_cscore_npz_round_trip(tmp_path):
    np.savez(tmp_path / "c.npz", labels=LABELS.numpy(), scores=SCORES.astype(np.float64))
    name, arr = load_score_file(tmp_path / "c.npz", LABELS.numpy())
    assert name == "cscore"
    np.testing.assert_array_equal(arr, SCORES)


def test_recorder_npz_round_trip_by_name(tmp_path):
    scores = {"forgetting": SCORES, "aum": -SCORES, "el2n": torch.from_numpy(SCORES * 2)}
    save_scores(tmp_path / "s.npz", scores)
    for key, value in scores.items():
        name, arr = load_score_file(tmp_path / "s.npz", LABELS, name=key)
        assert name == key
        np.testing.assert_array_equal(arr, np.asarray(value))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_single_array_npz_needs_no_name(tmp_path):
    save_scores(tmp_path / "s.npz", {"aum": SCORES})
    assert load_score_file(tmp_path / "s.npz", LABELS)[0] == "aum"


def test_save_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    save_scores(path, {"aum": SCORES})
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_scores(path, {"aum": -SCORES})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="names must be among"):
        save_scores(tmp_path / "s.npz", {"labels": SCORES})
    with pytest.raises(ValueError, match=".npz"):
        save_scores(tmp_path / "s.npy", {"aum": SCORES})
    with pytest.raises(ValueError, match="1-D"):
        save_forgetting_npy(tmp_path / "f.npy", np.zeros((2, 3)))


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_score_file(tmp_path / "nope.npy", LABELS)


@pytest.mark.parametrize("filename", ["bad.npy", "bad.npz"])
@pytest.mark.parametrize("content", [b"", b"this is not numpy at all", b"PK\x03\x04garbage"])
def test_corrupt_file(tmp_path, filename, content):
    (tmp_path / filename).write_bytes(content)
    with pytest.raises(DataError, match="cannot read score file .*corrupt"):
        load_score_file(tmp_path / filename, LABELS)


def test_truncated_npz(tmp_path):
    save_scores(tmp_path / "s.npz", {"aum": np.arange(1000, dtype=np.float32)})
    data = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "s.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read score file"):
        load_score_file(tmp_path / "s.npz", torch.zeros(1000, dtype=torch.long))


def test_wrong_length(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros(1000, np.float32))
    with pytest.raises(DataError, match="has 1000 scores, the train set has 60000 samples"):
        load_score_file(tmp_path / "f.npy", torch.zeros(60000, dtype=torch.long))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_non_finite(tmp_path, bad):
    arr = SCORES.astype(np.float64)
    arr[[4, 7]] = bad  # 1e300 overflows float32
    np.save(tmp_path / "f.npy", arr)
    with pytest.raises(DataError, match=r"2 NaN or infinite scores \(first at index 4\)"):
        load_score_file(tmp_path / "f.npy", LABELS)


def test_not_1d(tmp_path):
    np.save(tmp_path / "f.npy", SCORES.reshape(3, 4))
    with pytest.raises(DataError, match=r"shape \(3, 4\), expected a 1-D"):
        load_score_file(tmp_path / "f.npy", torch.zeros(3, dtype=torch.long))


def test_non_numeric(tmp_path):
    np.save(tmp_path / "f.npy", np.array(["a"] * N))
    with pytest.raises(DataError, match="expected real numbers"):
        load_score_file(tmp_path / "f.npy", LABELS)


@pytest.mark.parametrize("filename", ["scores.txt", "scores"])
def test_unknown_extension(tmp_path, filename):
    (tmp_path / filename).write_text("1 2 3")
    with pytest.raises(DataError, match="extension .*expected .npy"):
        load_score_file(tmp_path / filename, LABELS)


def test_swapped_extensions(tmp_path):
    np.save(tmp_path / "a.npy", SCORES)
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(DataError, match="rename it to .npy"):
        load_score_file(tmp_path / "a.npz", LABELS)
    save_scores(tmp_path / "b.npz", {"aum": SCORES})
    (tmp_path / "b.npz").rename(tmp_path / "b.npy")
    with pytest.raises(DataError, match="rename it to .npz"):
        load_score_file(tmp_path / "b.npy", LABELS)


def test_cscore_labels_differ(tmp_path):
    labels = LABELS.clone()
    labels[[5, 9, 10]] += 1
    np.savez(tmp_path / "c.npz", labels=labels.numpy(), scores=SCORES)
    with pytest.raises(DataError, match=r"3 of 12 labels differ .*first at index 5"):
        load_score_file(tmp_path / "c.npz", LABELS)


def test_cscore_labels_wrong_length(tmp_path):
    np.savez(tmp_path / "c.npz", labels=np.zeros(50000, np.int64), scores=np.zeros(50000, np.float32))
    with pytest.raises(DataError, match=r"labels of shape \(50000,\), the train set has 12 samples"):
        load_score_file(tmp_path / "c.npz", LABELS)


def test_cscore_without_scores_or_with_other_name(tmp_path):
    np.savez(tmp_path / "c.npz", labels=LABELS.numpy())
    with pytest.raises(DataError, match="no 'scores' array"):
        load_score_file(tmp_path / "c.npz", LABELS)
    np.savez(tmp_path / "d.npz", labels=LABELS.numpy(), scores=SCORES)
    with pytest.raises(DataError, match="C-score file .* no score 'aum'"):
        load_score_file(tmp_path / "d.npz", LABELS, name="aum")


def test_npz_several_arrays_without_name_lists_keys(tmp_path):
    save_scores(tmp_path / "s.npz", {"forgetting": SCORES, "aum": SCORES})
    with pytest.raises(DataError, match=r"several score arrays \(aum, forgetting\); choose one"):
        load_score_file(tmp_path / "s.npz", LABELS)


def test_npz_missing_or_unknown_name(tmp_path):
    save_scores(tmp_path / "s.npz", {"forgetting": SCORES, "aum": SCORES})
    with pytest.raises(DataError, match="no score 'el2n'; it holds: aum, forgetting"):
        load_score_file(tmp_path / "s.npz", LABELS, name="el2n")
    np.savez(tmp_path / "t.npz", hardness=SCORES)
    with pytest.raises(DataError, match="'hardness' is not a known score"):
        load_score_file(tmp_path / "t.npz", LABELS)


def test_npz_wrong_length_names_the_score(tmp_path):
    save_scores(tmp_path / "s.npz", {"aum": SCORES[:5]})
    with pytest.raises(DataError, match="has 5 'aum' scores, the train set has 12 samples"):
        load_score_file(tmp_path / "s.npz", LABELS)
