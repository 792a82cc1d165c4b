"""One writer per run directory: an advisory lock on OUT/.lock held while a command runs.

A second `ccfs` command on the same run directory (or a second launch of a torchrun job)
stops at once with one line naming the holder, instead of repeating the work and
appending duplicate records. The lock is an `fcntl.flock` on an open file, so the kernel
releases it when the holder exits, however it exits: a crashed run never leaves a stale lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ccfs.errors import CCFSError

NAME = ".lock"


class RunLocked(CCFSError):
    """Another process holds the run directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}), started {started}"


@contextmanager
def hold(out: Path, command: str | None = None) -> Iterator[None]:
    """Hold OUT/.lock for the duration of the block, or raise RunLocked at once."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / NAME
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{out} is in use by {_holder(path)}; wait for it to finish, or use another "
                            "out= directory") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                            "command": command or " ".join(["ccfs", *sys.argv[1:]])}))
        f.flush()
        yield
    finally:
        f.close()  # releases the lock
