"""Disk retention: pure selection rules over a directory's entries, and the removal.

Every stage that leaves things on disk (training checkpoints, deployments' model copies, the
eval cache) bounds them with the same two rules, so they behave, and are tested, alike:

- `select_keep_newest`: keep the `keep` newest entries, remove the rest;
- `select_under_bytes`: remove the oldest entries until the total fits in `max_bytes` (LRU
  when "newness" is the last-use time).

Protected paths (what is serving, what is in use right now, the checkpoint just written) are
never selected. They still count towards a byte bound, since they occupy the disk, but not
towards a count: "keep stable + canary + the 2 newest" keeps up to 4. The selection functions
are pure (entries in, entries out) so the rules can be property-tested; `prune_*` scan a
directory, select, and remove (or, with `dry_run`, only report), which is what `shipyard gc`
calls.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.fs import directory_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One removable unit: a file, or a directory removed as a whole."""

    path: Path
    size_bytes: int
    newness: float  # larger is newer: an mtime, a training step, a model version


@dataclass
class PruneResult:
    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    kept: list[Path] = field(default_factory=list)
    kept_bytes: int = 0


def newest_mtime(path: Path) -> float:
    """Latest mtime of `path` or anything below it: when it was last written (or touched)."""
    latest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):
                    latest = max(latest, (Path(root) / name).lstat().st_mtime)
    return latest


def scan(paths: Iterable[Path], newness: Callable[[Path], float] = newest_mtime) -> list[Entry]:
    """Entries for `paths` (each sized recursively); `newness` orders them, mtime by default."""
    return [Entry(p, directory_bytes(p), newness(p)) for p in paths]


def _order_newest_first(entries: Sequence[Entry]) -> list[Entry]:
    # Ties broken by path so the selection does not depend on the listing order.
    return sorted(entries, key=lambda e: (e.newness, str(e.path)), reverse=True)


def _is_protected(entry: Entry, protected: Collection[Path]) -> bool:
    return entry.path in protected


def select_keep_newest(entries: Sequence[Entry], keep: int,
                       protected: Collection[Path] = ()) -> list[Entry]:
    """Entries to remove so that only the `keep` newest (plus the protected) remain."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    protected = set(protected)
    return [e for e in _order_newest_first(entries)[keep:] if not _is_protected(e, protected)]


def select_under_bytes(entries: Sequence[Entry], max_bytes: int,
                       protected: Collection[Path] = ()) -> list[Entry]:
    """Entries to remove, oldest first, until the total size is at most `max_bytes`.

    Protected entries count towards the total but are never selected: when they alone
    exceed `max_bytes`, every unprotected entry is selected and the bound is not reached."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    protected = set(protected)
    total = sum(e.size_bytes for e in entries)
    chosen: list[Entry] = []
    for entry in reversed(_order_newest_first(entries)):  # oldest first
        if total <= max_bytes:
            break
        if _is_protected(entry, protected):
            continue
        chosen.append(entry)
        total -= entry.size_bytes
    return chosen


def remove(entries: Iterable[Entry], *, dry_run: bool = False) -> list[Path]:
    """Delete each entry (a directory with everything below it); returns what was removed.

    An entry that has already gone counts as removed: pruning twice is the same as once."""
    removed = []
    for entry in entries:
        if not dry_run:
            if entry.path.is_dir() and not entry.path.is_symlink():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                entry.path.unlink(missing_ok=True)
            logger.info("retention: removed %s (%d bytes)", entry.path, entry.size_bytes)
        removed.append(entry.path)
    return removed


def _result(entries: Sequence[Entry], chosen: Sequence[Entry], dry_run: bool) -> PruneResult:
    gone = {e.path for e in chosen}
    kept = [e for e in entries if e.path not in gone]
    return PruneResult(removed=remove(chosen, dry_run=dry_run),
                       freed_bytes=sum(e.size_bytes for e in chosen),
                       kept=[e.path for e in kept], kept_bytes=sum(e.size_bytes for e in kept))


def prune_keep_newest(entries: Sequence[Entry], keep: int, *,
                      protected: Collection[Path] = (), dry_run: bool = False) -> PruneResult:
    """Remove all but the `keep` newest entries (protected ones always stay)."""
    return _result(entries, select_keep_newest(entries, keep, protected), dry_run)


def prune_under_bytes(entries: Sequence[Entry], max_bytes: int, *,
                      protected: Collection[Path] = (), dry_run: bool = False) -> PruneResult:
    """Remove the oldest entries until the total fits in `max_bytes` (protected ones stay)."""
    return _result(entries, select_under_bytes(entries, max_bytes, protected), dry_run)


def children(directory: Path, *, include: Callable[[Path], bool] = lambda _: True
             ) -> list[Path]:
    """The direct children of `directory` that `include` accepts; [] if it does not exist."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if include(p))
