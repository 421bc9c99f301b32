"""Checkpoints bound to a key the checkpoint store does not hold: nothing is unpickled unless
this installation sealed it.

Reading a DCP checkpoint runs pickle twice over: its ``.metadata`` is a pickle, and its
byte-IO entries (non-tensor optimizer state) are read with ``torch.load(weights_only=False)``.
The manifest's sha256 per file proves only that the files match the manifest, and the
manifest sits beside them: whoever can write the store (a shared volume, a bucket) can write a
matching one, and resume would run their code. So rank 0 MACs the manifest (HMAC-SHA256) with
a key kept outside the store, ``<SHIPYARD_HOME>/keys/checkpoint-hmac.key`` (mode 0600, created
by the first save), and resume:

  1. refuses a verified checkpoint whose manifest carries no MAC, or one that does not match
     the key, or that names another step (`check_bound`, TRAIN_CHECKPOINT_UNTRUSTED), before
     any of its files is parsed;
  2. reads every file DCP opens through `load_bound`: the bytes are read once, checked
     against the bound digest, and those same bytes are what DCP unpickles, so a file swapped
     after rank 0 verified it is refused too, on the rank that reads it.

Multi-node jobs: only rank 0 seals and checks the MAC, but rank 0 may land on another node
after a restart: mount the same key file there (a Kubernetes secret).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import pickle
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import StorageMeta

from common.errors import StageError
from common.fs import atomic_create_bytes, private_dir
from common.settings import load_settings

KEY_FILE = "checkpoint-hmac.key"
MAC_FIELD = "mac"
UNTRUSTED = "TRAIN_CHECKPOINT_UNTRUSTED"
METADATA = ".metadata"  # DCP's global metadata file: a pickle
_KEY_BYTES = 32


def untrusted(message: str, details: dict[str, Any]) -> StageError:
    """The refusal of a checkpoint this installation cannot authenticate."""
    return StageError("TRAIN_CHECKPOINT_UNTRUSTED", message, details=details)


def default_key_path() -> Path:
    return load_settings().keys_dir / KEY_FILE


def read_key(path: Path) -> bytes | None:
    """The checkpoint key at `path`, or None when there is none yet."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    key = bytes.fromhex(text)
    if len(key) < _KEY_BYTES:
        raise untrusted(f"checkpoint key {path} holds {len(key)} bytes; it must hold at least "
                        f"{_KEY_BYTES} (hex). Restore the key that sealed the checkpoints, or "
                        "remove it to start over with a fresh train.checkpoint_dir.",
                        {"key_file": str(path)})
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key at `path`, created (0600, complete before it is visible) if absent."""
    key = read_key(path)
    if key is not None:
        return key
    private_dir(path.parent)
    # never replaces an existing key: another run that created it meanwhile keeps theirs
    atomic_create_bytes(path, secrets.token_bytes(_KEY_BYTES).hex().encode("ascii"))
    created = read_key(path)
    assert created is not None
    return created


def _mac(manifest: dict[str, Any], key: bytes) -> str:
    body = {k: v for k, v in manifest.items() if k != MAC_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, canonical.encode("ascii"), hashlib.sha256).hexdigest()


def seal(manifest: dict[str, Any], key: bytes) -> dict[str, Any]:
    """`manifest` with its MAC."""
    return {**manifest, MAC_FIELD: _mac(manifest, key)}


def check_bound(path: object, raw_manifest: bytes, step: int, key: bytes | None,
                key_path: Path) -> dict[str, str]:
    """{file: sha256} of a manifest sealed by `key` for `step`; else TRAIN_CHECKPOINT_UNTRUSTED.

    Called before any file of the checkpoint is parsed."""
    fix = ("Nothing in it was loaded. If you did not write it, remove it; a checkpoint from "
           "another machine resumes only with the key that sealed it (copy that key file to "
           f"{key_path}); otherwise start with a fresh train.checkpoint_dir.")
    if key is None:
        raise untrusted(f"checkpoint {path} cannot be authenticated: there is no checkpoint "
                        f"key at {key_path} (rule: resume only loads checkpoints whose "
                        f"manifest carries a MAC by this installation's key). {fix}",
                        {"checkpoint": str(path), "key_file": str(key_path)})
    manifest = json.loads(raw_manifest)
    recorded = manifest.get(MAC_FIELD)
    problem = ("its manifest carries no MAC (written by an older shipyard, or not by shipyard)"
               if not isinstance(recorded, str)
               else "its manifest's MAC does not match the key"
               if not hmac.compare_digest(recorded, _mac(manifest, key))
               else f"its manifest was sealed for step {manifest.get('step')}, not {step}"
               if manifest.get("step") != step else None)
    if problem is not None:
        raise untrusted(f"checkpoint {path} is not bound to this installation: {problem} "
                        f"(rule: DCP checkpoints are pickles and are loaded only when rank 0's "
                        f"key at {key_path} sealed them). {fix}",
                        {"checkpoint": str(path), "key_file": str(key_path)})
    files: dict[str, str] = manifest["files"]
    return files


def check_bytes(path: object, name: str, data: bytes, digests: dict[str, str]) -> bytes:
    """`data` (file `name` of checkpoint `path`) if it is what the sealed manifest names."""
    if digests.get(name) != hashlib.sha256(data).hexdigest():
        raise untrusted(f"checkpoint {path}: {name} is not the file its sealed manifest names "
                        "(changed after it was verified, or never listed); refused before "
                        "parsing it. Remove the checkpoint, or find what writes into the "
                        "checkpoint store.", {"checkpoint": str(path), "file": name})
    return data


class _BoundFileSystem:
    """A DCP file system whose streams are the bytes of a bound file, checked once read."""

    def __init__(self, inner: Any, root: str, digests: dict[str, str]) -> None:
        self._inner = inner
        self._root = root.rstrip("/")
        self._digests = digests

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextmanager
    def create_stream(self, path: str | os.PathLike[str], mode: str) -> Iterator[io.BytesIO]:
        full = os.fspath(path)
        name = full[len(self._root) + 1:] if full.startswith(self._root + "/") else full
        if mode != "rb":
            raise ValueError(f"checkpoint {self._root}: {name} opened to write while loading")
        with self._inner.create_stream(path, mode) as stream:
            data = stream.read()
        check_bytes(self._root, name, data, self._digests)
        yield io.BytesIO(data)


def load_bound(state: dict[str, Any], reader: Any, digests: dict[str, str]) -> None:
    """`dcp.load(state)` through `reader` (a DCP FileSystemReader or FsspecReader) reading
    only bytes that match `digests`: its file system is wrapped, so the pickled metadata and
    the data reads are both checked. A refusal raises TRAIN_CHECKPOINT_UNTRUSTED on every rank
    that reads the file (DCP raises a data-read failure on every rank)."""
    reader.fs = _BoundFileSystem(reader.fs, os.fspath(reader.path), digests)
    # Read (and check) the metadata here, not inside dcp.load: DCP turns a metadata-read
    # failure into the text of an AssertionError, and the refusal would lose its code.
    with reader.fs.create_stream(reader.fs.concat_path(reader.path, METADATA), "rb") as stream:
        metadata = pickle.load(stream)  # safe: the bytes matched the sealed digest
    if getattr(metadata, "storage_meta", None) is None:
        metadata.storage_meta = StorageMeta()
    metadata.storage_meta.load_id = reader.load_id
    reader.read_metadata = lambda *args, **kwargs: metadata
    try:
        dcp.load(state, storage_reader=reader)
    except CheckpointException as exc:
        refusals = [error for error, _ in exc.failures.values() if isinstance(error, StageError)]
        if refusals:
            raise refusals[0] from exc
        raise
