"""A checkpoint's manifest: what `verify_checkpoint` checks and what rank 0 writes last.

``manifest.json`` lists the sha256 and size of every other file of a checkpoint and which rank
hashed it; from format 3 it carries the MAC that binds it to this installation
(training/checkpoint_trust.py). Local directories and object stores are verified alike.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch.distributed as dist

from common.digests import sha256_file
from training.checkpoint_trust import seal
from training.storage import ObjectStore, is_object_store_uri

MANIFEST = "manifest.json"
TRAIN_STATE = "train_state.json"
# 1: {"step", "world_size", "files"}, hashed by rank 0 alone (no "format" key).
# 2: adds "format", "sizes" and "hashed_by_rank"; "files" unchanged, so both load alike.
# 3: adds "mac" (checkpoint_trust.py); 1 and 2 still verify, but resume refuses them unbound.
MANIFEST_FORMAT = 3
STEP_DIR = re.compile(r"^step-(\d{8})$")

# A checkpoint location: a local directory, or an object-store URI (a str, s3://...).
Location = Path | str


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


# A checkpoint location: a local directory, or an object-store URI (a str, s3://...).


def verify_checkpoint(path: Location, *, check_digests: bool = True) -> str | None:
    """None if `path` is a complete checkpoint matching its manifest, else the reason.

    `check_digests=False` checks only names and sizes (no file is read): what the writer
    uses right after sealing a checkpoint whose files it has just hashed."""
    if isinstance(path, str) and is_object_store_uri(path):
        return verify_remote(ObjectStore(path), check_digests=check_digests)
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json (incomplete write)"
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    present.discard(MANIFEST)
    checked = check_manifest(manifest_path.read_bytes(), present)
    if isinstance(checked, str):
        return checked
    expected, sizes = checked
    if not check_digests:
        for name, size in sorted(sizes.items()):
            if (path / name).stat().st_size != size:
                return f"size mismatch in {name}"
        return None
    for name, digest in expected.items():
        if sha256_file(path / name) != digest:
            return f"sha256 mismatch in {name}"
    return None


def check_manifest(raw: bytes, present: set[str]
                    ) -> tuple[dict[str, str], dict[str, int]] | str:
    """(sha256 by file, size by file) of a readable manifest whose file list is exactly
    `present` (the checkpoint's files but the manifest), else why the checkpoint is not
    usable. Local directories and object stores share it."""
    try:
        manifest = json.loads(raw)
        expected: dict[str, str] = manifest["files"]
        sizes: dict[str, int] = manifest.get("sizes", {})
        version = int(manifest.get("format", 1))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable manifest.json ({exc})"
    if version > MANIFEST_FORMAT:
        return (f"manifest.json format {version} is newer than this version of shipyard reads "
                f"(<= {MANIFEST_FORMAT}); resume it with the version that wrote it")
    if missing := sorted(set(expected) - present):
        return f"files missing: {missing}"
    if extra := sorted(present - set(expected)):
        return f"files not in the manifest: {extra}"
    return expected, sizes


def verify_remote(store: ObjectStore, *, check_digests: bool) -> str | None:
    """`verify_checkpoint` for a checkpoint prefix on an object store."""
    present = store.files()
    if MANIFEST not in present:
        return "no manifest.json (incomplete write)"
    raw = store.read_bytes(MANIFEST)
    present.pop(MANIFEST)
    checked = check_manifest(raw, set(present))
    if isinstance(checked, str):
        return checked
    expected, sizes = checked
    for name, size in sorted(sizes.items()):
        if present[name] != size:
            return f"size mismatch in {name}"
    if check_digests:
        for name, digest in expected.items():
            if store.sha256(name) != digest:
                return f"sha256 mismatch in {name}"
    return None


def list_checkpoints(root: Location) -> list[tuple[int, Location]]:
    """(step, path) of every finished-looking checkpoint directory, newest first (URIs for
    an object-store root)."""
    if isinstance(root, str) and is_object_store_uri(root):
        store = ObjectStore(root)
        remote: list[tuple[int, Location]] = [
            (int(m.group(1)), store.url(name)) for name in store.children()
            if (m := STEP_DIR.match(name))]
        return sorted(remote, reverse=True)
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[tuple[int, Location]] = [
        (int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted(found, reverse=True)


def build_manifest(step: int, files: dict[str, str], sizes: dict[str, int],
              hashed_by_rank: dict[str, list[str]], key: bytes) -> str:
    """manifest.json of a checkpoint: every file's sha256 and size, who hashed what, and the
    MAC by `key` that binds it to this installation."""
    return json.dumps(seal({"format": MANIFEST_FORMAT, "step": step,
                            "world_size": dist.get_world_size(),
                            "files": dict(sorted(files.items())),
                            "sizes": dict(sorted(sizes.items())),
                            "hashed_by_rank": hashed_by_rank}, key), indent=1)


def merge_manifests(per_rank: list[dict[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """One {file: sha256} from each rank's; two ranks claiming one file is a bug, not a merge."""
    files: dict[str, str] = {}
    hashed_by_rank: dict[str, list[str]] = {}
    for rank, digests in enumerate(per_rank):
        if clash := sorted(set(files) & set(digests)):
            raise RuntimeError(f"checkpoint files claimed by two ranks (rank {rank}): {clash}")
        files.update(digests)
        hashed_by_rank[str(rank)] = sorted(digests)
    return files, hashed_by_rank
