"""Atomic writes and small JSON helpers for run-directory artifacts.

Every artifact is written to a temporary name in the same folder, flushed to disk and
renamed into place (`atomic_path`), so an interrupted run never leaves a half-written file
that a resume would trust. A folder of files is built the same way (`atomic_dir`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ccfs.distributed import is_main
from ccfs.errors import CCFSError, DataError


def _sibling(path: Path, tag: str) -> Path:
    """A hidden name next to `path`, unique to this process: `.name.<tag><pid>`."""
    return path.with_name(f".{path.name}.{tag}{os.getpid()}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` for the block to write; if the block succeeds,
    fsync the file and rename it onto `path`, so readers (and a resume after a crash or a
    power cut) see the old file or the whole new one. If it raises, nothing is left behind.

    The one atomic-write mechanism of ccfs: every file artifact is written through it. Under
    torchrun only rank 0 writes: on the other ranks the block writes to a scratch file that
    is thrown away."""
    path = Path(path)
    if not is_main():
        with tempfile.TemporaryDirectory() as scratch:
            yield Path(scratch) / path.name
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise _named(e, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def _named(e: OSError, path: Path) -> OSError:
    """A full disk or a read-only folder, naming the artifact (a write to a file object
    names none)."""
    return e if e.filename is not None or e.errno is None else OSError(e.errno, e.strerror, str(path))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new empty folder next to `path` for the block to fill; if the block succeeds,
    swap it in for `path` (an existing `path` is replaced). If it raises, `path` is untouched
    and the temporary folder is removed. The swap is two renames: a crash between them
    leaves the old folder as `.name.old<pid>` and no `path`, never a half-filled `path`."""
    path = Path(path)
    if not is_main():  # under torchrun only rank 0 writes
        with tempfile.TemporaryDirectory() as scratch:
            yield Path(scratch)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _sibling(path, "tmp"), _sibling(path, "old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except OSError as e:
        raise _named(e, path) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON artifact; a damaged one is a DataError saying how to make it again."""
    return read_artifact(path, lambda p: json.loads(Path(p).read_text()))


def read_artifact(path: str | Path, load: Callable[[Path], Any]) -> Any:
    """`load(path)` of a file a stage wrote; a file that exists but cannot be read (cut short,
    overwritten, not the format) is a one-line DataError naming it and the folder to delete
    so that its stage makes it again. A missing file raises FileNotFoundError as usual."""
    path = Path(path)
    try:
        return load(path)
    except (CCFSError, FileNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001 - torch, numpy and json raise many types for one cause
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise DataError(f"{path} is damaged ({reason}): delete the folder {path.parent} and run the same "
                        "command again, and its stage makes it again") from None


def torch_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically. Serialised in memory first: torch reports a full disk as a
    RuntimeError from its zip writer, a plain write as the OSError it is."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (a single write of a whole line); rank 0 only under torchrun."""
    if not is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    try:
        with open(path, "a") as f:
            f.write(("\n" if cut else "") + json.dumps(record) + "\n")  # a cut line stays alone
    except OSError as e:
        raise _named(e, path) from None


def git_commit() -> str:
    """The commit of the ccfs source tree, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_tree_clean() -> bool | None:
    """Whether the ccfs source tree has no uncommitted change to tracked files (None: not a
    git checkout)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return None if out.returncode else out.stdout.strip() == ""
    except (OSError, subprocess.SubprocessError):
        return None


def file_sha1(path: str | Path) -> str:
    """The sha1 of a file's bytes (12 hex digits: enough to tell two artifacts apart)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def np_save(path: str | Path, array) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def np_savez(path: str | Path, arrays: dict[str, Any]) -> None:
    """Write named arrays to one uncompressed .npz, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
