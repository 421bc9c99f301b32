"""Durable, private file writes: the one owner of "write a temp file, fsync, rename".

A rename alone is atomic but not durable: after a power loss the directory entry can point at
a file whose data never reached the disk (an empty state.json, a zero-length key). So every
writer here fsyncs the file before the rename and the directory after it, and creates the
file with its final mode from the start (never world-readable for a moment).

Local state, decision records, the trust policy and keys are written 0600 in directories
created 0700 (`private_dir`); files meant to be shared (reports, data splits) pass 0o644.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SHARED_FILE_MODE = 0o644


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace `path` with `data`, whole or not at all, and durably: a crash or a failed
    write leaves the old file (or none) and no partial one."""
    atomic_write_with(path, lambda handle: handle.write(data), mode=mode)


def atomic_write_text(path: Path, text: str, *, mode: int = PRIVATE_FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object], *,
                      mode: int = PRIVATE_FILE_MODE) -> None:
    """`write(handle)` fills a binary temp file beside `path`, which then replaces it."""
    path = Path(path)
    tmp = _write_temp(path, write, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(path.parent)


def atomic_create_bytes(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> bool:
    """Like `atomic_write_bytes`, but never replaces an existing file: False when `path`
    already exists (another process created it first; keep theirs)."""
    path = Path(path)
    tmp = _write_temp(path, lambda handle: handle.write(data), mode)
    try:
        os.link(tmp, path)  # link fails on an existing name; rename would overwrite it
    except FileExistsError:
        return False
    finally:
        _remove(tmp)
    fsync_dir(path.parent)
    return True


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents with mode 0700; an existing directory keeps
    its mode (a home the user chose to share stays theirs to decide)."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        with contextlib.suppress(OSError):  # created meanwhile by another user
            os.chmod(created, PRIVATE_DIR_MODE)
    return path


def directory_bytes(path: Path) -> int:
    """Bytes of a file, or of every file below a directory: what deleting it would free.
    Symlinks count as themselves (never followed: a link to a shared model is not its
    size); a file removed or unreadable while we walk takes no space."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, write: Callable[[BinaryIO], object], mode: int) -> str:
    # Same directory as `path`: a rename across file systems is not atomic.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the final mode before any data is written
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
