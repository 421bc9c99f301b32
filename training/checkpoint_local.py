"""Checkpoints in a local directory: DCP's file writer, and the durable publish protocol.

Written into ``.step-XXXXXXXX.partial``; every file and directory is fsynced before the rename
publishes it, and the rename (parent fsynced) before anything older is pruned.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from torch.distributed.checkpoint import FileSystemWriter

from common.digests import sha256_file


class RecordsWrittenFiles:
    """Mixed into DCP's writers: remembers the shard files this rank wrote, so that this
    rank, not rank 0, hashes them."""

    written: set[str]

    def write_data(self, plan: Any, planner: Any) -> Any:
        future = super().write_data(plan, planner)  # type: ignore[misc]
        # Runs where DCP runs the write (the background thread under async_save); the result
        # lists one WriteResult per tensor/blob, naming the file it landed in.
        for result in future.wait():
            self.written.add(result.storage_data.relative_path)
        return future


class RecordingWriter(RecordsWrittenFiles, FileSystemWriter):
    """DCP's file writer; `sync_files=True`: DCP fsyncs each shard as it closes it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, sync_files=True)
        self.written = set()


def publish(partial: Path, final: Path) -> None:
    """Rename `partial` to `final`, durably; a same-step `final` from an earlier attempt is
    moved aside first and removed only once the new one is in place."""
    aside = final.with_name(f".{final.name}.replaced")
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(partial, final)
    fsync_dir(final.parent)  # the rename itself must reach the disk before any pruning
    shutil.rmtree(aside, ignore_errors=True)


def clean_leftovers(root: Path) -> None:
    """Remove half-written checkpoints; restore one moved aside by a crash mid-`publish`."""
    for leftover in root.glob(".step-*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)
    for aside in root.glob(".step-*.replaced"):
        final = root / aside.name[1 : -len(".replaced")]
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, final)


def hash_and_sync(path: Path) -> str:
    """sha256 of `path`, after fsyncing it: the digest describes bytes that are on disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    return sha256_file(path)


def write_durably(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
