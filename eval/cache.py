"""Bounding the eval cache (`<SHIPYARD_HOME>/eval-cache`, or `eval.cache_dir`) on disk.

It holds two kinds of entries, both safe to lose (a miss only costs a recomputation):
  ``<digest>/<path>/responses-json.db``  the response cache of one model (`ResponseCache`)
  ``judge/<xx>/<key>.json``              one judge call (eval/judge/cache.py)

The response cache is ours, not lm-eval's `CachingLM`: that one is a pickle `SqliteDict`, so a
row planted in the cache directory ran code when read and could forge the response a metric
(and then a signed eval report) is computed from. Ours stores JSON text, keyed by the model
digest, model path and lm-eval's request hash, and a value that is not exactly the shape its
request type returns is a miss: it is recomputed and overwritten, never an error, never code.
Old ``responses_rank*.db`` pickle files are never opened again; pruning removes them with
their model's directory.

Pruning is least-recently-used by mtime: a judge hit touches its file, and the models an
evaluation has just used are touched (and protected) when it prunes, so the entries that go
first are the ones nobody has asked for longest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from common import retention

logger = logging.getLogger(__name__)

JUDGE_CACHE_DIR = "judge"  # eval/stage.py: `cache_dir / "judge"`
RESPONSE_CACHE_FILE = "responses-json.db"
# The request types lm-eval asks a model for; each is cached (greedy generation only).
CACHED_REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


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


def _response(request_type: str, value: Any) -> Any:
    """`value` as lm-eval expects a `request_type` response, or None if it is not one."""
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    if request_type == "loglikelihood":  # (log-likelihood, is greedy)
        if (isinstance(value, list) and len(value) == 2 and number(value[0])
                and isinstance(value[1], bool)):
            return float(value[0]), value[1]
        return None
    if request_type == "loglikelihood_rolling":
        return float(value) if number(value) else None
    return value if isinstance(value, str) else None  # generate_until: the text


class ResponseCache:
    """Model responses as JSON rows in SQLite, one file per (model digest, model path)."""

    def __init__(self, path: Path, model_digest: str, model_path: str) -> None:
        self.path = path
        self._scope = [model_digest, model_path]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:  # not a database at all: start it over
            logger.warning("response cache %s unreadable (%s): starting it afresh", path, exc)
            path.unlink(missing_ok=True)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT)")
        return db

    def key(self, request_type: str, request_args: tuple[Any, ...]) -> str:
        from lm_eval.api.model import hash_args  # the request hash lm-eval's cache uses

        return hashlib.sha256(json.dumps([*self._scope, hash_args(request_type, request_args)]
                                         ).encode()).hexdigest()

    def get(self, request_type: str, key: str) -> Any:
        """The cached response, or None: absent, unreadable or not the right shape."""
        try:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)
                                   ).fetchone()
            return None if row is None else _response(request_type, json.loads(row[0]))
        except (sqlite3.Error, ValueError, TypeError):
            return None

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value, allow_nan=False)
        self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                         (key, text))

    def close(self) -> None:
        self._db.close()

    def wrap(self, request_type: str, compute: Callable[[list[Any]], list[Any]]
             ) -> Callable[[list[Any]], list[Any]]:
        """`compute` (an lm-eval request method) answering cached requests from the cache."""
        def cached(requests: list[Any]) -> list[Any]:
            keys = [None if _sampled(request_type, r.args) else self.key(request_type, r.args)
                    for r in requests]
            answers = [None if k is None else self.get(request_type, k) for k in keys]
            missing = [i for i, answer in enumerate(answers) if answer is None]
            fresh = compute([requests[i] for i in missing]) if missing else []
            for i, value in zip(missing, fresh, strict=True):
                answers[i] = value
                key = keys[i]
                if key is not None and _response(request_type, _as_json(value)) is not None:
                    self.put(key, _as_json(value))
            return answers
        return cached


def _sampled(request_type: str, args: tuple[Any, ...]) -> bool:
    """Sampled generation is not cached: repeats must differ (what lm-eval's cache does)."""
    return request_type == "generate_until" and bool(args[1].get("do_sample", False))


def _as_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def install_response_cache(lm: Any, cache: ResponseCache) -> None:
    """Answer `lm`'s requests from `cache` where it can: its request methods are replaced on
    the instance, so `lm` stays the `LM` lm-eval checks for and keeps every other attribute."""
    for request_type in CACHED_REQUEST_TYPES:
        setattr(lm, request_type, cache.wrap(request_type, getattr(lm, request_type)))
