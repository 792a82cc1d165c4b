"""Reading and writing per-sample difficulty score files (docs/method.md §4, §8).

Three formats, told apart by extension and contents:
- `.npy`: an official forgetting file, float [N], higher = harder → "forgetting".
- `.npz` with arrays `labels` and `scores`: a C-score file, higher = easier → "cscore";
  its labels must equal the train set's, which catches a file for another dataset/order.
- `.npz` without `labels`: written by `save_scores` from `DynamicsRecorder.scores()`, one
  array per score name; pick one with `name`.
Every problem a user can cause raises `DataError` with one line: what is wrong, how to fix.
Writes are atomic (`ccfs.artifacts.np_save`, `np_savez`), so a crash never leaves half a file.
"""
from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ccfs.artifacts import np_save, np_savez
from ccfs.errors import DataError
from ccfs.scores import HIGHER_IS_EASIER as SCORE_EASIER_IS_HIGHER

_FORMATS_HINT = ".npy (forgetting) or .npz (C-score with labels/scores, or scores saved by ccfs)"


def _read(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """The array of a .npy, or every array of a .npz, as read from disk."""
    try:
        with open(path, "rb") as f:
            obj = np.load(f, allow_pickle=False)
            return dict(obj.items()) if isinstance(obj, np.lib.npyio.NpzFile) else obj
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        raise DataError(f"cannot read score file {path} ({type(e).__name__}: {e}); "
                        f"the file is corrupt or not a numpy file, re-create or re-download it") from None


def _check_scores(path: Path, arr: np.ndarray, n: int, what: str = "scores") -> np.ndarray:
    """`arr` as float32 [n], or a DataError naming what is wrong."""
    if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
        raise DataError(f"{path}: {what} have dtype {arr.dtype}, expected real numbers")
    if arr.ndim != 1:
        raise DataError(f"{path}: {what} have shape {arr.shape}, expected a 1-D array of one score per sample")
    if len(arr) != n:
        raise DataError(f"{path} has {len(arr)} {what}, the train set has {n} samples; "
                        "use the score file made for this dataset")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, reported below
        out = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        raise DataError(f"{path} has {len(bad)} NaN or infinite {what} (first at index {bad[0]}); "
                        "re-create the file")
    return out


def _check_labels(path: Path, file_labels: np.ndarray, labels: np.ndarray) -> None:
    if file_labels.shape != labels.shape:
        raise DataError(f"{path} has labels of shape {file_labels.shape}, the train set has {len(labels)} "
                        "samples; use the C-score file made for this dataset")
    differ = np.flatnonzero(file_labels != labels)
    if len(differ):
        raise DataError(f"{path}: {len(differ)} of {len(labels)} labels differ from the train set's "
                        f"(first at index {differ[0]}); the file is for another dataset or sample order")


def _pick_npz(path: Path, arrays: dict[str, np.ndarray], name: str | None) -> str:
    """Which array of a ccfs-written npz to use."""
    keys = ", ".join(sorted(arrays)) or "none"
    if name is None and len(arrays) != 1:
        raise DataError(f"{path} holds several score arrays ({keys}); choose one by name")
    name = next(iter(arrays)) if name is None else name
    if name not in arrays:
        raise DataError(f"{path} has no score {name!r}; it holds: {keys}")
    if name not in SCORE_EASIER_IS_HIGHER:
        raise DataError(f"{path}: {name!r} is not a known score name ({', '.join(SCORE_EASIER_IS_HIGHER)})")
    return name


def _as_numpy_labels(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    return labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)


def load_score_file(path: str | Path, labels: torch.Tensor | np.ndarray,
                    name: str | None = None) -> tuple[str, np.ndarray]:
    """(score name, float32 scores [N]) from a score file, checked against the train `labels` [N].

    `name` picks an array of a ccfs-written .npz, or renames a .npy (default "forgetting").
    """
    path = Path(path)
    labels = _as_numpy_labels(labels)
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"score file {path} has extension {path.suffix or '(none)'!r}; expected {_FORMATS_HINT}")
    if not path.is_file():
        raise DataError(f"score file {path} does not exist; check the path ({_FORMATS_HINT})")
    data = _read(path)
    if path.suffix == ".npy":
        if not isinstance(data, np.ndarray):
            raise DataError(f"{path} is an .npz archive named .npy; rename it to .npz")
        name = name or "forgetting"
        if name not in SCORE_EASIER_IS_HIGHER:
            raise DataError(f"{path}: {name!r} is not a known score name ({', '.join(SCORE_EASIER_IS_HIGHER)})")
        return name, _check_scores(path, data, len(labels))
    if not isinstance(data, dict):
        raise DataError(f"{path} is a single .npy array named .npz; rename it to .npy")
    if "labels" in data:  # C-score file
        if "scores" not in data:
            raise DataError(f"{path} has 'labels' but no 'scores' array; a C-score file holds both")
        if name not in (None, "cscore"):
            raise DataError(f"{path} is a C-score file (labels + scores), it has no score {name!r}")
        _check_labels(path, data["labels"], labels)
        return "cscore", _check_scores(path, data["scores"], len(labels))
    name = _pick_npz(path, data, name)
    return name, _check_scores(path, data[name], len(labels), what=f"{name!r} scores")


def load_dataset_scores(path: str | Path, data) -> tuple[str, np.ndarray]:
    """A score file for the dataset's file order (one score per image of the file's train
    split), checked, then reduced to the rows ccfs trains on when a validation split was
    carved out (`data.val_size`)."""
    name, arr = load_score_file(path, data.file_train_labels)
    return name, arr if data.train_rows is None else arr[data.train_rows.numpy()]


# ----------------------------------------------------------------------------- writing


def _float_vector(key: str, value) -> np.ndarray:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"score {key!r} has shape {arr.shape}, expected a 1-D array")
    return arr


def save_scores(path: str | Path, scores: Mapping[str, np.ndarray | torch.Tensor]) -> None:
    """Write float32 [N] arrays keyed by score name to an .npz, atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"save_scores writes .npz files, got {path}")
    unknown = sorted(set(scores) - set(SCORE_EASIER_IS_HIGHER))
    if unknown or not scores:
        raise ValueError(f"cannot save scores {unknown or '(none)'}; names must be among "
                         f"{', '.join(SCORE_EASIER_IS_HIGHER)}")
    arrays = {k: _float_vector(k, v) for k, v in scores.items()}
    np_savez(path, arrays)


def save_forgetting_npy(path: str | Path, arr: np.ndarray | torch.Tensor) -> None:
    """Write forgetting scores [N] (higher = harder) as an official-format float32 .npy, atomically."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"save_forgetting_npy writes .npy files, got {path}")
    vec = _float_vector("forgetting", arr)
    np_save(path, vec)
