"""Bounding the eval cache (`<SHIPYARD_HOME>/eval-cache`, or `eval.cache_dir`) on disk.

It holds two kinds of entries, both safe to lose (a miss only costs a recomputation):
  ``<digest>/``            lm-eval's response cache of one model (eval/harness.py)
  ``judge/<xx>/<key>.json``  one judge call (eval/judge/cache.py)

Pruning is least-recently-used by mtime: a judge hit touches its file, and the models an
evaluation has just used are touched (and protected) when it prunes, so the entries that go
first are the ones nobody has asked for longest.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from common import retention

JUDGE_CACHE_DIR = "judge"  # eval/stage.py: `cache_dir / "judge"`


def eval_cache_entries(cache_dir: Path) -> list[retention.Entry]:
    """One entry per model digest directory and one per judge-call file."""
    digests = retention.children(cache_dir, include=lambda p: p.is_dir()
                                 and p.name != JUDGE_CACHE_DIR and not p.name.startswith("."))
    # ".tmp-*" files are judge calls being written right now: never removed under a writer.
    judge_calls = sorted(p for p in (cache_dir / JUDGE_CACHE_DIR).glob("*/*.json")
                         if not p.name.startswith("."))
    return retention.scan([*digests, *judge_calls])


def prune_eval_cache(cache_dir: Path, max_bytes: int, *, in_use_digests: Collection[str] = (),
                     dry_run: bool = False) -> retention.PruneResult:
    """Remove least recently used entries until the cache holds at most `max_bytes`.

    `in_use_digests`: model digests whose responses are in use now (the candidate and
    champion of the evaluation that prunes): marked used and never removed."""
    protected = [cache_dir / digest for digest in in_use_digests]
    if not dry_run:
        for path in protected:
            if path.is_dir():
                os.utime(path)  # last used: now
    return retention.prune_under_bytes(eval_cache_entries(cache_dir), max_bytes,
                                       protected=protected, dry_run=dry_run)
