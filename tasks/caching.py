"""Cache versions derived from source code.

Flyte's cache key is (task name, cache_version, inputs). Deriving `cache_version` from the
hash of the code a stage runs means an unchanged stage with unchanged inputs is skipped, and
any edit to its code re-runs it, with nobody remembering to bump a number.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

from common.settings import PROJECT_ROOT


def code_version(*relative_paths: str, packages: tuple[str, ...] = ()) -> str:
    """sha256 (first 16 hex) over the files at these paths (files, or every file below a
    folder but bytecode) and the installed versions of `packages` (libraries whose upgrade
    can change the stage's output bytes)."""
    digest = hashlib.sha256()
    for rel in sorted(relative_paths):
        root = PROJECT_ROOT / rel
        files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       ) if root.is_dir() else [root]
        for path in files:
            digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    for package in sorted(packages):
        digest.update(f"{package}=={metadata.version(package)}\0".encode())
    return digest.hexdigest()[:16]


# Modules every stage depends on.
COMMON = ("common", "tasks/contracts.py", "training/pretrained.py", "tasks/timeouts.py",
          # TrainedModel carries the typed TrainConfig
          "training/config.py", "training/storage.py",
          "deploy/outcomes.py", "tasks/flyte_adapter.py", "tasks/overview.py", "tasks/caching.py",
          "tasks/shell.py")
