"""Inter-process file locks: the one owner of `flock`.

A `flock` lock belongs to the open file, so the kernel releases it when the holder dies,
SIGKILL included: no stale lock file to clean up by hand, unlike a create-exclusive marker.
The holder writes its pid into the file so a refused caller can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the lock and the caller chose not to wait."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


@contextmanager
def file_lock(path: Path, *, wait: bool = True,
              on_wait: Callable[[], object] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing; its directory must exist).

    Held by another process: with `wait` we block until it is released (`on_wait` runs once
    first, to tell the user why nothing happens); without, `LockHeld` names the holder.
    """
    path = Path(path)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                handle.seek(0)
                raise LockHeld(path, handle.read().strip() or "unknown") from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
