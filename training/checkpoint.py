"""Atomic, verified checkpoints with torch.distributed.checkpoint (DCP).

Layout of one checkpoint (``<root>/step-00000050/``):
  DCP shards + ``.metadata``   model and optimizer state (sharded under FSDP)
  ``rng-rank{r}.pt``           each rank's torch RNG state
  ``train_state.json``         step, data position, scheduler state, MLflow run id, and the
                               provenance (config and dataset digests) of the weights
  ``manifest.json``            sha256 of every file above, written last

All ranks write into ``.step-00000050.partial``; once every rank is done, rank 0 hashes the
files, writes the manifest and renames the directory. A directory without a manifest, or whose
files do not match it, is never loaded: resume takes the newest checkpoint that verifies and
warns about each one it skips. A checkpoint whose provenance differs from the run's is refused
outright (not skipped): its weights were trained from another config or other data, and a
model finished from it would carry a config digest that does not describe how it was made.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from common.digests import sha256_file
from common.errors import StageError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAIN_STATE = "train_state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def verify_checkpoint(path: Path) -> str | None:
    """None if `path` is a complete checkpoint matching its manifest, else the reason."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
        expected: dict[str, str] = manifest["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest.json ({exc})"
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    present.discard(MANIFEST)
    if missing := sorted(set(expected) - present):
        return f"files missing: {missing}"
    if extra := sorted(present - set(expected)):
        return f"files not in the manifest: {extra}"
    for name, digest in expected.items():
        if sha256_file(path / name) != digest:
            return f"sha256 mismatch in {name}"
    return None


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every finished-looking checkpoint directory, newest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(found, reverse=True)


@dataclass(frozen=True)
class Provenance:
    """What the weights of a run are trained from; a resume must match it exactly."""

    config_digest: str  # TrainConfig.digest()
    config: dict[str, Any]  # the config itself, to name the fields that differ
    dataset_digests: dict[str, str] = field(default_factory=dict)  # file/dir name -> sha256

    def as_train_state(self) -> dict[str, Any]:
        return {"config_digest": self.config_digest, "config": self.config,
                "dataset_digests": self.dataset_digests}


def check_provenance(path: Path, train_state: dict[str, Any], expected: Provenance) -> None:
    """Refuse to resume from `path` unless it was written under `expected`'s config and data."""
    _check_config(path, train_state, expected)
    _check_dataset(path, train_state, expected)


def _check_config(path: Path, train_state: dict[str, Any], expected: Provenance) -> None:
    recorded = train_state.get("config_digest")
    if recorded == expected.config_digest:
        return
    old = train_state.get("config") or {}
    changed = sorted(k for k in set(old) | set(expected.config)
                     if old.get(k) != expected.config.get(k)) if old else []
    raise StageError(
        "TRAIN_CHECKPOINT_CONFIG_MISMATCH",
        f"checkpoint {path} was written under train config digest {recorded}, but this run's "
        f"config digest is {expected.config_digest}"
        + (f" (fields that differ: {changed})" if changed else "")
        + ". Resuming would finish a model the recorded config does not describe. Use a "
        "fresh train.checkpoint_dir, or restore the config the checkpoint was written with.",
        details={"checkpoint": str(path), "checkpoint_config_digest": recorded,
                 "config_digest": expected.config_digest},
    )


def _check_dataset(path: Path, train_state: dict[str, Any], expected: Provenance) -> None:
    # A checkpoint that recorded no dataset digests cannot be verified: refused, not trusted.
    found: dict[str, str] = train_state.get("dataset_digests") or {}
    differing = sorted(k for k in set(found) | set(expected.dataset_digests)
                       if found.get(k) != expected.dataset_digests.get(k))
    if not differing:
        return
    pairs = "; ".join(f"{k}: checkpoint {found.get(k, 'not recorded')}, this run "
                      f"{expected.dataset_digests.get(k, 'absent')}" for k in differing)
    raise StageError(
        "TRAIN_CHECKPOINT_DATASET_MISMATCH",
        f"checkpoint {path} was trained on other data than this run's dataset ({pairs}). "
        "Resuming would finish a model on two datasets. Use a fresh train.checkpoint_dir, "
        "or restore the dataset the checkpoint was written with.",
        details={"checkpoint": str(path), "checkpoint_dataset_digests": found,
                 "dataset_digests": expected.dataset_digests},
    )


@dataclass
class _Pending:
    step: int
    partial: Path
    final: Path
    future: Any  # concurrent Future from dcp.async_save, or None when saved synchronously


class CheckpointManager:
    """Saves and restores the full training state; call the same methods on every rank."""

    def __init__(self, root: Path, *, keep: int, use_async: bool) -> None:
        self.root = root
        self.keep = keep
        self.use_async = use_async
        self.rank = dist.get_rank()
        self._pending: _Pending | None = None
        if self.rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            for leftover in root.glob(".step-*.partial"):
                shutil.rmtree(leftover, ignore_errors=True)
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
        final = self.root / step_dir_name(step)
        partial = self.root / f".{step_dir_name(step)}.partial"
        if self.rank == 0:
            partial.mkdir(parents=True, exist_ok=True)
            (partial / TRAIN_STATE).write_text(json.dumps(train_state, sort_keys=True))
        dist.barrier()
        torch.save(torch.get_rng_state(), partial / f"rng-rank{self.rank}.pt")
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        future = None
        if self.use_async:
            # Copies to CPU now, writes in the background; training continues meanwhile.
            future = dcp.async_save(state, checkpoint_id=str(partial))
        else:
            dcp.save(state, checkpoint_id=str(partial))
        self._pending = _Pending(step, partial, final, future)
        if not self.use_async:
            self.finalize()

    def finalize(self) -> None:
        """Wait for the in-flight checkpoint, then seal it with a manifest and rename it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.future is not None:
            pending.future.result()
        dist.barrier()
        if self.rank == 0:
            files = {
                p.relative_to(pending.partial).as_posix(): sha256_file(p)
                for p in sorted(pending.partial.rglob("*"))
                if p.is_file()
            }
            manifest = {"step": pending.step, "world_size": dist.get_world_size(), "files": files}
            _write_durably(pending.partial / MANIFEST, json.dumps(manifest, indent=1))
            if pending.final.exists():  # same step saved by an earlier attempt
                shutil.rmtree(pending.final)
            os.replace(pending.partial, pending.final)
            _fsync_dir(self.root)
            self._prune()
            logger.info("checkpoint saved: %s", pending.final)
        dist.barrier()

    def _prune(self) -> None:
        for _, path in list_checkpoints(self.root)[self.keep :]:
            shutil.rmtree(path, ignore_errors=True)

    # -- load ---------------------------------------------------------------------------
    def load_latest(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, provenance: Provenance
    ) -> dict[str, Any] | None:
        """Restore the newest checkpoint that verifies; returns its train_state or None.

        Raises StageError, on every rank and before loading any weights, if that checkpoint
        was written under another config or dataset than `provenance`.
        """
        choice: list[str | None] = [None]
        if self.rank == 0:
            choice[0] = self._newest_valid()
        dist.broadcast_object_list(choice, src=0)
        if choice[0] is None:
            return None
        path = Path(choice[0])
        train_state: dict[str, Any] = json.loads((path / TRAIN_STATE).read_text())
        check_provenance(path, train_state, provenance)
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        rng_file = path / f"rng-rank{self.rank}.pt"
        if rng_file.is_file():  # absent when the world size changed: keep the fresh seed
            torch.set_rng_state(torch.load(rng_file, weights_only=True))
        if self.rank == 0:
            logger.warning("resumed from checkpoint %s (step %d)", path, train_state["step"])
        return train_state

    def _newest_valid(self) -> str | None:
        for _, path in list_checkpoints(self.root):
            reason = verify_checkpoint(path)
            if reason is None:
                return str(path)
            logger.warning("skipping checkpoint %s: %s", path, reason)
        return None


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
