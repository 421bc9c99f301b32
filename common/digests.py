"""Digests: the identity of every artifact.

A model directory is identified by the OpenSSF model-signing root digest; a file by its
sha256; a non-model directory by `sha256_tree`.

For models, model-signing hashes every file (sorted by path) and takes sha256 over the
concatenated file digests; that value is the subject digest of its signature. We compute the
same value so the digest in MLflow tags, the SLSA provenance subject, the deploy request and
the logs is the one the model signature vouches for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from model_signing import hashing


def model_root_digest(model_dir: Path, ignore_paths: list[Path] | None = None) -> str:
    config = hashing.Config()
    if ignore_paths:
        config.set_ignored_paths(paths=[Path(p) for p in ignore_paths])
    manifest = config.hash(Path(model_dir))
    root = hashlib.sha256()
    for descriptor in manifest.resource_descriptors():
        root.update(descriptor.digest.digest_value)
    return root.hexdigest()


_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of one file: the identity of every artifact that is not a model directory."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def sha256_stream(handle: BinaryIO) -> str:
    """sha256 of what is left to read in an open binary handle (a local file or an fsspec
    object-store file), read in 1 MiB chunks: a large file is never held in memory."""
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path) -> str:
    """Digest of a directory: sha256 over sorted (relative path, file digest) lines."""
    lines = [
        f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n"
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
