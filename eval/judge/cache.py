"""On-disk judge-call cache: one JSON file per call, keyed by what determines the verdict.

The key is sha256 over (judge model, prompt id, input, outputs, decoding settings). A hit
makes no HTTP call, so re-running an evaluation, or judging the same champion answers again,
costs nothing. Files are written to a temp name and renamed: a crash never leaves a torn
entry that would parse as a verdict. A hit touches its file: eval/cache.py bounds the cache by
evicting the least recently used entries (by mtime) first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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


class JudgeCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            value: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            with contextlib.suppress(OSError):  # pruned meanwhile: the verdict still stands
                os.utime(path)  # recently used: evicted last
            return value
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable entry: call again and overwrite it

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, ensure_ascii=False)
        os.replace(tmp, path)
