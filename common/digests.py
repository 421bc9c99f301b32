"""Digests: the identity of every artifact.

A model directory is identified by the OpenSSF model-signing root digest; a file by its
sha256; a non-model directory by `sha256_tree`.

For models, model-signing hashes every file (sorted by path) and takes sha256 over the
concatenated file digests; that value is the subject digest of its signature. We compute the
same value so the digest in MLflow tags, the SLSA provenance subject, the deploy request and
the logs is the one the model signature vouches for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, BinaryIO, NewType

from common.errors import StageError

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    """Whether `value` is a sha256 as this project writes every digest: 64 lowercase hex
    digits, no "sha256:" prefix (what `sha256sum` prints)."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


# A digest checked once where it entered: a file's sha256 or a model-signing root digest, 64
# lowercase hex digits. A NewType, not a str subclass: at run time it is the plain `str` that
# JSON, YAML, MLflow tags and Flyte's strictly typed literals take unchanged; for mypy a
# function that takes a `Sha256` refuses an unchecked `str`. Make one with `sha256_digest`.
Sha256 = NewType("Sha256", str)


def sha256_digest(value: object, what: str = "digest") -> Sha256:
    """`value` as a checked `Sha256`; StageError DIGEST_INVALID naming `what` otherwise."""
    if not is_sha256(value):
        raise StageError(
            "DIGEST_INVALID",
            f"{what}={str(value)[:100]!r}: a digest is 64 lowercase hex digits (a sha256 as "
            "sha256sum prints it, without a 'sha256:' prefix). Pass the digest the producing "
            "stage reported, unchanged.")
    return Sha256(str(value))


def model_root_digest(model_dir: Path, ignore_paths: list[Path] | None = None) -> Sha256:
    from model_signing import hashing  # heavy: only where a model is hashed

    config = hashing.Config()
    if ignore_paths:
        config.set_ignored_paths(paths=[Path(p) for p in ignore_paths])
    manifest = config.hash(Path(model_dir))
    root = hashlib.sha256()
    for descriptor in manifest.resource_descriptors():
        root.update(descriptor.digest.digest_value)
    return Sha256(root.hexdigest())


_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> Sha256:
    """sha256 of one file: the identity of every artifact that is not a model directory."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def sha256_stream(handle: BinaryIO) -> Sha256:
    """sha256 of what is left to read in an open binary handle (a local file or an fsspec
    object-store file), read in 1 MiB chunks: a large file is never held in memory."""
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK_BYTES):
        digest.update(chunk)
    return Sha256(digest.hexdigest())


def sha256_tree(root: Path) -> Sha256:
    """Digest of a directory: sha256 over sorted (relative path, file digest) lines."""
    lines = [
        f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n"
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    ]
    return Sha256(hashlib.sha256("".join(lines).encode()).hexdigest())


def check_digest_fields(value: Any) -> None:
    """Every digest a dataclass carries, checked by its name: a field `*_digest` holds one
    digest (or None), a field `*_digests` a mapping of them. For the values stages hand each
    other (tasks/contracts.py): a malformed digest is refused where the value is made or read
    back from a Flyte literal, with the field's name, not deep inside the next stage."""
    owner = type(value).__name__
    for field in dataclasses.fields(value):
        found = getattr(value, field.name)
        if field.name.endswith("_digest") and found is not None:
            sha256_digest(found, f"{owner}.{field.name}")
        elif field.name.endswith("_digests"):
            for key, digest in dict(found).items():
                sha256_digest(digest, f"{owner}.{field.name}[{key!r}]")
