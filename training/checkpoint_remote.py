"""Checkpoints on an object store: DCP's fsspec writer, pruning and leftovers.

There is no rename and no fsync on an object store: a checkpoint is written in place under
``step-XXXXXXXX/`` and published by its manifest, written last (training/storage.py).
"""

from __future__ import annotations

import logging

from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

from training.checkpoint_local import RecordsWrittenFiles
from training.checkpoint_manifest import MANIFEST, STEP_DIR, list_checkpoints
from training.storage import ObjectStore

logger = logging.getLogger(__name__)


class RecordingFsspecWriter(RecordsWrittenFiles, FsspecWriter):
    """DCP's fsspec writer (object stores: nothing to fsync)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri, sync_files=False)
        self.written = set()


def prune_remote(store: ObjectStore, keep: int, protected: set[str], dry_run: bool) -> None:
    steps = list_checkpoints(store.uri)
    for _, uri in steps[keep:]:
        if str(uri) not in protected and not dry_run:
            store.remove_tree(str(uri).rsplit("/", 1)[-1], first=MANIFEST)
            logger.info("pruned checkpoint %s", uri)


def clean_remote_leftovers(store: ObjectStore) -> None:
    """Remove step prefixes an interrupted save left without a manifest (never loaded)."""
    for name in store.children():
        if STEP_DIR.match(name) and not store.exists(name, MANIFEST):
            store.remove_tree(name)
