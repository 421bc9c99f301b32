"""On-disk judge-call cache: one JSON file per call, keyed by what determines the verdict.

The key is sha256 over (judge model, prompt id, input, outputs, decoding settings), scoped by
`endpoint_key` to the judge's URL and the digest of its weights (or "unknown"): a verdict of
one server, or of other weights served under the same name, is never another's hit. A hit
makes no HTTP call, so re-running an evaluation, or judging the same champion answers again,
costs nothing. Files are written to a temp name and renamed: a crash never leaves a torn
entry that would parse as a verdict, and an entry that is not a reply's exact shape (a torn,
hand-edited or planted file) is a miss: called again and overwritten, never an error. The
cache is JSON only, never a pickle. A hit touches its file: eval/cache.py bounds the cache by
evicting the least recently used entries (by mtime) first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cache_key(*, judge_model: str, prompt_id: str, question: str, outputs: Sequence[str],
              max_tokens: int, logprobs: bool) -> str:
    payload = json.dumps({"judge_model": judge_model, "prompt_id": prompt_id,
                          "input": question, "outputs": list(outputs),
                          "max_tokens": max_tokens, "logprobs": logprobs},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def endpoint_key(key: str, *, chat_url: str, model_digest: str | None) -> str:
    """`key` (from `cache_key`) scoped to one judge server and the weights it serves."""
    scope = json.dumps({"chat_url": chat_url, "model_digest": model_digest or "unknown",
                        "key": key}, sort_keys=True)
    return hashlib.sha256(scope.encode("utf-8")).hexdigest()


def _is_reply(value: Any) -> bool:
    """The shape JudgeClient writes: text, top logprobs ([token, logprob] pairs or null) and
    token counts."""
    def count(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return False
    top = value.get("top_logprobs")
    pairs_ok = top is None or (isinstance(top, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
        and isinstance(p[1], int | float) and not isinstance(p[1], bool)
        and math.isfinite(p[1]) for p in top))
    return pairs_ok and all(count(value.get(k, 0))
                            for k in ("prompt_tokens", "completion_tokens"))


class JudgeCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            value: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if not _is_reply(value):
                return None  # malformed or planted: a miss, overwritten by the next call
            with contextlib.suppress(OSError):  # pruned meanwhile: the verdict still stands
                os.utime(path)  # recently used: evicted last
            return value
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            return None  # unreadable entry: call again and overwrite it

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, ensure_ascii=False)
        os.replace(tmp, path)
