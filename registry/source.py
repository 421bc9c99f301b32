"""Where the code came from: repository, commit and whether the checkout was clean."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"


@dataclass(frozen=True)
class SourceInfo:
    # Repository URL (https://..., or file:///path for a checkout without a remote).
    repository: str
    # Full commit sha of HEAD, or "unknown" outside a git checkout.
    commit: str
    # Uncommitted or untracked changes at build time; None when unknown. A dirty build's
    # provenance names a commit that does not contain all of the code that ran.
    dirty: bool | None


def source_info(project_root: Path | None, repository: str | None = None) -> SourceInfo:
    """Read the checkout at `project_root`; `repository` overrides its origin URL."""
    if project_root is None:
        return SourceInfo(repository=repository or UNKNOWN, commit=UNKNOWN, dirty=None)
    commit = _git(project_root, "rev-parse", "HEAD")
    if commit is None:
        return SourceInfo(
            repository=repository or project_root.resolve().as_uri(), commit=UNKNOWN, dirty=None
        )
    # --no-optional-locks: `status` must not rewrite the index of the checkout it inspects.
    status = _git(project_root, "--no-optional-locks", "status", "--porcelain")
    origin = _git(project_root, "config", "--get", "remote.origin.url")
    return SourceInfo(
        repository=repository or origin or project_root.resolve().as_uri(),
        commit=commit,
        dirty=None if status is None else bool(status),
    )


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("git %s in %s failed: %s", " ".join(args), cwd, exc)
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip()
