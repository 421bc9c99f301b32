"""sha256 digests of files and directories: the identity of every non-model artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path

from registry.digest import sha256_file

__all__ = ["sha256_file", "sha256_tree"]


def sha256_tree(root: Path) -> str:
    """Digest of a directory: sha256 over sorted (relative path, file digest) lines."""
    lines = [
        f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n"
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
