"""Atomic, verified checkpoints with torch.distributed.checkpoint (DCP).

Layout of one checkpoint (``<root>/step-00000050/``):
  DCP shards + ``.metadata``   model and optimizer state (sharded under FSDP)
  ``rng-rank{r}.pt``           each rank's torch RNG state
  ``train_state.json``         step, data position, scheduler state, MLflow run id, and the
                               provenance (config and dataset digests) of the weights
  ``manifest.json``            sha256 and size of every file above, written last

All ranks write into ``.step-00000050.partial``. Each rank then hashes and fsyncs the files it
wrote itself (its DCP shards, its RNG state), so the hashing of a large sharded checkpoint is
spread over the ranks instead of rank 0 reading every byte; rank 0 gathers the per-rank
digests, hashes what no rank claimed (DCP's ``.metadata``, ``train_state.json``), writes the
manifest, fsyncs the directory, renames it, fsyncs the parent, and only then prunes older
checkpoints. A directory without a manifest, or whose files do not match it, is never loaded:
resume takes the newest checkpoint that verifies and warns about each one it skips. A
checkpoint whose provenance differs from the run's is refused outright (not skipped): its
weights were trained from another config or other data, and a model finished from it would
carry a config digest that does not describe how it was made.

On an object store (``checkpoint_dir: s3://bucket/prefix``, required for multi-node jobs) the
same checkpoint is written through DCP's fsspec writer, in place under ``step-00000050/``:
there is no rename and no fsync, so the manifest, written last by rank 0 once every rank's
digests are in, is what publishes it (see training/storage.py). Verification, resume and
pruning read the same manifest the same way.

The manifest is bound to this installation (training/checkpoint_trust.py): rank 0 MACs it with
a key the store does not hold, and resume refuses an unbound checkpoint
(TRAIN_CHECKPOINT_UNTRUSTED) before anything in it is unpickled; every rank then reads each DCP
file as bytes checked against the bound digest.

Modules: checkpoint_manifest.py (manifest, verification, listing), checkpoint_local.py (local
writer and publish protocol), checkpoint_remote.py (object-store writer, pruning, leftovers),
checkpoint_provenance.py (config/data provenance), checkpoint_trust.py (the MAC and the bound
reader); this module keeps `CheckpointManager` and the public API.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from common import retention
from common.errors import StageError
from training.checkpoint_local import (
    RecordingWriter,
    clean_leftovers,
    fsync_dir,
    hash_and_sync,
    publish,
    write_durably,
)
from training.checkpoint_manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    TRAIN_STATE,
    Location,
    build_manifest,
    list_checkpoints,
    merge_manifests,
    step_dir_name,
    verify_checkpoint,
)
from training.checkpoint_provenance import Provenance, check_provenance
from training.checkpoint_remote import RecordingFsspecWriter, clean_remote_leftovers, prune_remote
from training.checkpoint_trust import (
    check_bound,
    check_bytes,
    default_key_path,
    load_bound,
    load_or_create_key,
    read_key,
    untrusted,
)
from training.storage import ObjectStore, is_object_store_uri

# The public API, wherever each part now lives (tests and training/loop.py import it here).
__all__ = ["MANIFEST", "MANIFEST_FORMAT", "TRAIN_STATE", "CheckpointManager", "Location",
           "Provenance", "check_provenance", "list_checkpoints", "prune_checkpoints",
           "step_dir_name", "verify_checkpoint"]

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    step: int
    partial: Path  # local: the directory written; object store: unused (== final's URI)
    final: Location
    writer: RecordingWriter | RecordingFsspecWriter
    future: Any  # concurrent Future from dcp.async_save, or None when saved synchronously


class CheckpointManager:
    """Saves and restores the full training state; call the same methods on every rank."""

    def __init__(self, root: Location, *, keep: int, use_async: bool,
                 key_path: Path | None = None) -> None:
        self.store = ObjectStore(root) if isinstance(root, str) and is_object_store_uri(root) \
            else None
        self.root = Path(root) if self.store is None else root
        self.keep = keep
        self.use_async = use_async
        # The MAC key of the manifests (rank 0 only): outside the store, never beside it.
        self.key_path = key_path or default_key_path()
        self.rank = dist.get_rank()
        self._pending: _Pending | None = None
        if self.rank == 0:
            if self.store is not None:
                clean_remote_leftovers(self.store)
            else:
                Path(root).mkdir(parents=True, exist_ok=True)
                clean_leftovers(Path(root))
        dist.barrier()

    # -- save ---------------------------------------------------------------------------
    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_state: dict[str, Any],
    ) -> None:
        self.finalize()  # at most one checkpoint in flight
        if self.store is not None:
            self._save_remote(step, model, optimizer, train_state, self.store)
            return
        assert isinstance(self.root, Path)
        final = self.root / step_dir_name(step)
        partial = self.root / f".{step_dir_name(step)}.partial"
        if self.rank == 0:
            partial.mkdir(parents=True, exist_ok=True)
            write_durably(partial / TRAIN_STATE, json.dumps(train_state, sort_keys=True))
        dist.barrier()
        torch.save(torch.get_rng_state(), partial / _rng_name(self.rank))
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        writer = RecordingWriter(partial)
        future = None
        if self.use_async:
            # Copies to CPU now, writes in the background; training continues meanwhile.
            future = dcp.async_save(state, storage_writer=writer)
        else:
            dcp.save(state, storage_writer=writer)
        self._pending = _Pending(step, partial, final, writer, future)
        if not self.use_async:
            self.finalize()

    def _save_remote(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     train_state: dict[str, Any], store: ObjectStore) -> None:
        """`save` onto an object store: written in place, published by the manifest."""
        name = step_dir_name(step)
        if self.rank == 0:
            # A same-step prefix is from an abandoned attempt (resume chose an older step):
            # unpublish it (manifest first) before writing over it.
            store.remove_tree(name, first=MANIFEST)
            store.write_bytes(json.dumps(train_state, sort_keys=True).encode(), name, TRAIN_STATE)
        dist.barrier()
        rng = io.BytesIO()
        torch.save(torch.get_rng_state(), rng)
        store.write_bytes(rng.getvalue(), name, _rng_name(self.rank))
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        writer = RecordingFsspecWriter(store.url(name))
        future = None
        if self.use_async:
            future = dcp.async_save(state, storage_writer=writer)
        else:
            dcp.save(state, storage_writer=writer)
        self._pending = _Pending(step, Path(name), store.url(name), writer, future)
        if not self.use_async:
            self.finalize()

    def finalize(self) -> None:
        """Wait for the in-flight checkpoint, then seal it with a manifest and rename it.

        Order matters for crash safety: every file and directory of the new checkpoint is on
        disk (fsynced) before the rename publishes it, the rename is on disk (parent fsynced)
        before anything older is pruned, and pruning starts only once the new checkpoint is
        complete and verified. Pruning first, or before the data reached the disk, would let
        a power loss or kernel crash leave the newest checkpoint torn and the older ones
        already deleted: no checkpoint to resume from at all."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.future is not None:
            pending.future.result()
        # Each rank hashes (and fsyncs) only what it wrote: its shards and RNG state.
        own = sorted(pending.writer.written | {_rng_name(self.rank)})
        if self.store is not None:
            store = self.store
            mine = {name: store.sha256(pending.partial.name, name) for name in own}
        else:
            mine = {name: hash_and_sync(pending.partial / name) for name in own}
        gathered: list[dict[str, str] | None] | None = (
            [None] * dist.get_world_size() if self.rank == 0 else None)
        dist.gather_object(mine, gathered, dst=0)  # also waits for every rank's writes
        if self.rank == 0:
            assert gathered is not None
            if self.store is not None:
                self._seal_remote(pending, [g or {} for g in gathered], self.store)
            else:
                self._seal(pending, [g or {} for g in gathered])
        dist.barrier()

    def _seal_remote(self, pending: _Pending, per_rank: list[dict[str, str]],
                     store: ObjectStore) -> None:
        """Rank 0, object store: the manifest (written last) publishes; then prune."""
        name = pending.partial.name
        files, hashed_by_rank = merge_manifests(per_rank)
        listing = store.files(name)
        unclaimed = sorted(n for n in listing if n not in files)
        for other in unclaimed:
            files[other] = store.sha256(name, other)
        hashed_by_rank["0"] = sorted([*hashed_by_rank.get("0", []), *unclaimed])
        if missing := sorted(set(files) - set(listing)):
            raise RuntimeError(f"checkpoint {pending.final}: hashed files not listed: {missing}")
        manifest = build_manifest(pending.step, files, {n: listing[n] for n in files},
                                  hashed_by_rank, load_or_create_key(self.key_path))
        store.write_bytes(manifest.encode(), name, MANIFEST)
        self._verify_then_prune(pending)

    def _verify_then_prune(self, pending: _Pending) -> None:
        """After publishing: the new checkpoint must verify before older ones are pruned."""
        reason = verify_checkpoint(pending.final, check_digests=False)
        if reason is not None:  # never expected: keep every older checkpoint as a fallback
            logger.error("checkpoint %s does not verify after sealing (%s): older checkpoints "
                         "kept", pending.final, reason)
            return
        logger.info("checkpoint saved: %s", pending.final)
        prune_checkpoints(self.root, self.keep, protected=[pending.final])

    def _seal(self, pending: _Pending, per_rank: list[dict[str, str]]) -> None:
        """Rank 0: merge the per-rank digests into the manifest, publish, then prune."""
        files, hashed_by_rank = merge_manifests(per_rank)
        # What no rank claimed was written by the coordinator: DCP's .metadata and
        # train_state.json. Rank 0 hashes those (small) files itself.
        unclaimed = sorted(
            name for p in pending.partial.rglob("*")
            if p.is_file() and (name := p.relative_to(pending.partial).as_posix()) not in files)
        for name in unclaimed:
            files[name] = hash_and_sync(pending.partial / name)
        hashed_by_rank["0"] = sorted([*hashed_by_rank.get("0", []), *unclaimed])
        sizes = {name: (pending.partial / name).stat().st_size for name in files}
        write_durably(pending.partial / MANIFEST,
                      build_manifest(pending.step, files, sizes, hashed_by_rank,
                                     load_or_create_key(self.key_path)))
        for directory in [*(p for p in pending.partial.rglob("*") if p.is_dir()),
                          pending.partial]:
            fsync_dir(directory)  # the directory entries of every file, before the rename
        assert isinstance(pending.final, Path)
        publish(pending.partial, pending.final)
        self._verify_then_prune(pending)

    # -- load ---------------------------------------------------------------------------
    def load_latest(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, provenance: Provenance
    ) -> dict[str, Any] | None:
        """Restore the newest checkpoint that verifies; returns its train_state or None.

        Raises StageError, on every rank and before loading any weights, if that checkpoint
        was written under another config or dataset than `provenance`, or if it is not bound
        to this installation's key (TRAIN_CHECKPOINT_UNTRUSTED, before anything is unpickled).
        """
        path, digests = self._choose_bound()
        if path is None:
            return None
        train_state: dict[str, Any] = json.loads(self._read_bound(path, TRAIN_STATE, digests))
        check_provenance(path, train_state, provenance)
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
        # Every file DCP opens (its pickled .metadata first) is read as bytes checked against
        # the bound manifest, on this rank, after rank 0's check: nothing unbound is parsed.
        reader = FsspecReader(path) if isinstance(path, str) else FileSystemReader(path)
        load_bound(state, reader, digests)
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        rng_state = self._read_rng(path, digests)
        if rng_state is not None:  # absent when the world size changed: keep the fresh seed
            torch.set_rng_state(rng_state)
        if self.rank == 0:
            logger.warning("resumed from checkpoint %s (step %d)", path, train_state["step"])
        return train_state

    def _read_rng(self, path: Location, digests: dict[str, str]) -> torch.Tensor | None:
        name = _rng_name(self.rank)
        if name not in digests:  # the world size changed: no RNG state for this rank
            return None
        return torch.load(io.BytesIO(self._read_bound(path, name, digests)), weights_only=True)

    def _choose_bound(self) -> tuple[Location | None, dict[str, str]]:
        """Rank 0 picks the newest intact checkpoint and checks its MAC; every rank gets the
        choice and its bound digests, or raises the same TRAIN_CHECKPOINT_UNTRUSTED."""
        choice: list[Any] = [None]
        if self.rank == 0:
            try:
                choice[0] = self._newest_bound()
            except StageError as exc:  # TRAIN_CHECKPOINT_UNTRUSTED: every rank raises it
                choice[0] = (exc.message, exc.details, None)
        dist.broadcast_object_list(choice, src=0)
        if choice[0] is None:
            return None, {}
        if len(choice[0]) == 3:
            message, details, _ = choice[0]
            raise untrusted(message, details)
        name, digests = choice[0]
        return (name if self.store is not None else Path(name)), digests

    def _newest_bound(self) -> tuple[str, dict[str, str]] | None:
        """(path, {file: sha256}) of the newest checkpoint that verifies, once its manifest's
        MAC is checked; a torn one is skipped, an unbound one refused (StageError)."""
        for step, path in list_checkpoints(self.root):
            reason = verify_checkpoint(path)
            if reason is not None:
                logger.warning("skipping checkpoint %s: %s", path, reason)
                continue
            raw = (ObjectStore(path).read_bytes(MANIFEST) if isinstance(path, str)
                   else (path / MANIFEST).read_bytes())
            return str(path), check_bound(path, raw, step, read_key(self.key_path),
                                          self.key_path)
        return None

    @staticmethod
    def _read_bound(path: Location, name: str, digests: dict[str, str]) -> bytes:
        """`name`'s bytes in checkpoint `path`, refused unless they match the bound digest."""
        raw = (ObjectStore(path).read_bytes(name) if isinstance(path, str)
               else (path / name).read_bytes())
        return check_bytes(path, name, raw, digests)


def prune_checkpoints(root: Location, keep: int, *, protected: Collection[Location] = (),
                      dry_run: bool = False) -> retention.PruneResult:
    """Keep the `keep` newest checkpoints (by step) under `root`, plus `protected`.

    The training loop protects the checkpoint it has just sealed: if a newer step from an
    abandoned attempt is still on disk (resume skipped it as corrupt), the fresh one must not
    be the one pruned. Half-written `.partial` directories are not checkpoints and are left
    to the next run's start (a live run may be writing one). Safe for `shipyard gc`.

    On an object store the result lists nothing in `removed`/`kept` (they are not local
    paths); the same checkpoints are removed, manifest first."""
    if isinstance(root, str) and is_object_store_uri(root):
        prune_remote(ObjectStore(root), keep, {str(p) for p in protected}, dry_run)
        return retention.PruneResult()
    root = Path(root)
    entries = retention.scan([Path(p) for _, p in list_checkpoints(root)],
                             newness=lambda p: float(int(p.name.split("-")[1])))
    return retention.prune_keep_newest(entries, keep, protected=[Path(p) for p in protected],
                                       dry_run=dry_run)


def _rng_name(rank: int) -> str:
    return f"rng-rank{rank}.pt"


