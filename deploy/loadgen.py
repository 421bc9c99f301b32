"""A bounded load generator that replays the shipped eval prompts as streaming chat requests.

It gives a local canary real traffic to be judged on. Bounded three ways: a request count, a
wall-clock limit and a concurrency limit; it targets loopback addresses only (anything else
is refused), and it stops by itself. Runs in its own thread with its own event loop, so the
controller keeps its synchronous shape.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp

from common.settings import PROJECT_ROOT
from serving.router import BACKEND_HEADER

EVAL_PROMPTS_FILE = PROJECT_ROOT / "data" / "corpus" / "eval.jsonl"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def load_eval_prompts(path: Path = EVAL_PROMPTS_FILE, limit: int | None = None) -> list[str]:
    prompts = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            prompts.append(str(row.get("instruction") or row.get("prompt")))
    return prompts[:limit] if limit else prompts


@dataclass(frozen=True)
class LoadSpec:
    requests_per_second: float
    concurrency: int
    max_requests: int
    max_seconds: float
    max_tokens: int = 16


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_backend: Counter[str] = field(default_factory=Counter)
    # transport failures and incomplete streams: requests a client would call lost
    lost: int = 0
    first_errors: list[str] = field(default_factory=list)
    latencies_seconds: list[float] = field(default_factory=list)
    # completion tokens of the successful answers: from the final `usage` chunk the client
    # asks for (`stream_options.include_usage`), else one per non-empty content delta
    generated_tokens: int = 0
    token_counts: Counter[str] = field(default_factory=Counter)  # "usage" / "deltas"
    # monotonic time of the first request sent and of the last answer received
    first_sent: float | None = None
    last_answered: float | None = None

    @property
    def wall_seconds(self) -> float:
        if self.first_sent is None or self.last_answered is None:
            return 0.0
        return max(self.last_answered - self.first_sent, 0.0)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "sent": self.sent, "ok": self.ok, "lost": self.lost,
            "by_status": dict(self.by_status), "by_backend": dict(self.by_backend),
            "first_errors": self.first_errors[:5],
            "generated_tokens": self.generated_tokens,
            "token_counts": dict(self.token_counts),
            "wall_seconds": round(self.wall_seconds, 3),
        }
        if self.generated_tokens and self.wall_seconds > 0:
            out["generated_tokens_per_second"] = self.generated_tokens / self.wall_seconds
        return out


def completion_tokens(stream: bytes) -> tuple[int, str]:
    """Generated tokens in one OpenAI-style SSE stream, and how they were counted: the
    `usage.completion_tokens` of the final chunk when the server sent one, else the number of
    chunks carrying non-empty content (one token per delta, as vLLM streams). Unparseable
    events count nothing."""
    deltas = 0
    usage: int | None = None
    for line in stream.splitlines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        try:
            event = json.loads(line[len(b"data: "):])
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        reported = (event.get("usage") or {}).get("completion_tokens")
        if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0:
            usage = reported
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and ((choice.get("delta") or {}).get("content")):
                deltas += 1
    return (usage, "usage") if usage is not None else (deltas, "deltas")


class LoadGenerator:
    def __init__(self, base_url: str, model: str, prompts: Sequence[str], spec: LoadSpec) -> None:
        host = urlsplit(base_url).hostname or ""
        if host not in _LOOPBACK_HOSTS:
            raise ValueError(f"load generator targets loopback only, not {base_url!r}")
        if not prompts:
            raise ValueError("no prompts to replay")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.prompts = list(prompts)
        self.spec = spec
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()),
                                        name="loadgen", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout_seconds: float | None = None) -> LoadResult:
        """Block until every request was sent and answered (or the time limit passed)."""
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        return self.result

    def stop(self, timeout_seconds: float = 60.0) -> LoadResult:
        """Stop sending; wait for requests in flight to finish (they are not abandoned)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        return self.result

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def _run(self) -> None:
        spec = self.spec
        slots = asyncio.Semaphore(spec.concurrency)
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=max(spec.max_seconds, 1.0) + 60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            for index in range(spec.max_requests):
                due = started + index / spec.requests_per_second
                while (now := time.monotonic()) < due and not self._stop.is_set():
                    await asyncio.sleep(min(due - now, 0.05))
                if self._stop.is_set() or time.monotonic() - started > spec.max_seconds:
                    break
                await slots.acquire()
                task = asyncio.create_task(self._one(session, index))
                task.add_done_callback(lambda _: slots.release())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

    async def _one(self, session: aiohttp.ClientSession, index: int) -> None:
        body = {"model": self.model, "stream": True, "max_tokens": self.spec.max_tokens,
                "temperature": 0.0, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": self.prompts[index % len(self.prompts)]}]}
        self.result.sent += 1
        began = time.monotonic()
        if self.result.first_sent is None:
            self.result.first_sent = began
        try:
            async with session.post(f"{self.base_url}/v1/chat/completions", json=body) as resp:
                payload = await resp.read()
                self.result.by_status[str(resp.status)] += 1
                self.result.by_backend[resp.headers.get(BACKEND_HEADER, "?")] += 1
                if resp.status == 200 and b"data: [DONE]" not in payload:
                    self._lost(f"stream ended without [DONE] ({len(payload)} bytes)")
                elif resp.status == 200:
                    self.result.ok += 1
                    self.result.last_answered = time.monotonic()
                    self.result.latencies_seconds.append(self.result.last_answered - began)
                    tokens, source = completion_tokens(payload)
                    self.result.generated_tokens += tokens
                    self.result.token_counts[source] += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._lost(f"{type(exc).__name__}: {exc}")

    def _lost(self, message: str) -> None:
        self.result.lost += 1
        if len(self.result.first_errors) < 10:
            self.result.first_errors.append(message)
