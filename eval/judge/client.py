"""HTTP client for an OpenAI-compatible ``/v1/chat/completions`` judge.

One user message per call (the prompt), temperature 0, a few output tokens, and the top-5
logprobs of each output token when asked. At most `concurrency` calls are in flight (an
asyncio semaphore); each has a total timeout. 429, 5xx, connection errors and timeouts
are retried with exponential backoff (a ``Retry-After`` header wins, capped); a call that
still fails is reported as a failed reply, which the caller counts as an invalid output.
Any other 4xx is a configuration error (wrong URL, model or key) and stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from eval.errors import EvalError
from eval.judge.cache import JudgeCache, endpoint_key

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TOP_LOGPROBS = 5


@dataclass(frozen=True)
class JudgeEndpoint:
    # Server root (``http://127.0.0.1:8000``) or its ``/v1`` URL.
    base_url: str
    model: str
    api_key: str | None = None
    # Digest of the served weights when known (a model directory the stage serves, or
    # eval.judge.model_digest): two models served under one name are then two judges.
    model_digest: str | None = None

    @property
    def identity(self) -> str:
        """What verdicts and calibrations are cached under: the model name, and its weights'
        digest when known."""
        return self.model if self.model_digest is None else f"{self.model}@{self.model_digest}"

    @property
    def chat_url(self) -> str:
        root = self.base_url.rstrip("/").removesuffix("/v1")
        return f"{root}/v1/chat/completions"


@dataclass(frozen=True)
class CallPolicy:
    concurrency: int = 8
    timeout_seconds: float = 60.0
    max_retries: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_tokens: int = 4
    request_logprobs: bool = True


@dataclass(frozen=True)
class JudgeRequest:
    prompt: str
    cache_key: str


@dataclass(frozen=True)
class JudgeReply:
    # None when the call failed after every retry (`error` says why).
    text: str | None
    # (token, logprob) alternatives at the first non-blank output token, when returned.
    top_logprobs: list[tuple[str, float]] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None


@dataclass
class CallStats:
    requests_sent: int = 0  # HTTP requests, retries included
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def add_error(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1


class Judge(Protocol):
    """What pairwise judging and calibration need: one judge (`JudgeClient`) or a jury of
    different models (`eval.judge.jury.Jury`)."""

    policy: CallPolicy
    stats: CallStats

    @property
    def identity(self) -> str: ...

    def complete_all(self, requests: list[JudgeRequest]) -> list[JudgeReply]: ...


class JudgeClient:
    def __init__(self, endpoint: JudgeEndpoint, policy: CallPolicy,
                 cache: JudgeCache | None = None) -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.cache = cache
        self.stats = CallStats()

    @property
    def identity(self) -> str:
        return self.endpoint.identity

    def complete_all(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        """Replies in the order of `requests` (cached ones without any HTTP call)."""
        started = time.perf_counter()
        try:
            return asyncio.run(self._complete_all(requests))
        finally:
            self.stats.wall_seconds += time.perf_counter() - started

    async def _complete_all(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        slots = asyncio.Semaphore(self.policy.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_seconds)
        connector = aiohttp.TCPConnector(limit=self.policy.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            return list(await asyncio.gather(
                *(self._complete(session, slots, request) for request in requests)))

    async def _complete(self, session: aiohttp.ClientSession, slots: asyncio.Semaphore,
                        request: JudgeRequest) -> JudgeReply:
        key = endpoint_key(request.cache_key, chat_url=self.endpoint.chat_url,
                           model_digest=self.endpoint.model_digest)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return _reply_from_cache(hit)
        async with slots:
            reply = await self._call_with_retries(session, request.prompt)
        if reply.text is not None and self.cache is not None:
            self.cache.put(key, {
                "text": reply.text, "top_logprobs": reply.top_logprobs,
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens})
        return reply

    async def _call_with_retries(self, session: aiohttp.ClientSession, prompt: str
                                 ) -> JudgeReply:
        error = "no attempt"
        for attempt in range(self.policy.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            self.stats.requests_sent += 1
            try:
                # No redirects: the key goes to the configured judge only (a 3xx is a 4xx-like
                # configuration error below).
                async with session.post(self.endpoint.chat_url, json=self._payload(prompt),
                                        headers=self._headers(),
                                        allow_redirects=False) as response:
                    if response.status == 200:
                        raw = await read_bounded(response, MAX_JUDGE_BODY_BYTES)
                        return self._parse(json.loads(raw))
                    body = (await read_bounded(response, 4096, truncate=True)).decode(
                        "utf-8", errors="replace")[:300]
                    if response.status not in RETRYABLE_STATUS:
                        raise EvalError(
                            "EVAL_JUDGE_REQUEST_REJECTED",
                            f"judge {self.endpoint.chat_url} answered HTTP {response.status} "
                            f"for model {self.endpoint.model!r}: {body}. Check "
                            "eval.judge.base_url, eval.judge.model and the API key variable "
                            "named by eval.judge.api_key_env.")
                    error = f"HTTP {response.status}"
                    delay = self._backoff(attempt, response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:
                # ValueError: a 200 whose body is not the JSON we asked for (RecursionError:
                # JSON nested too deeply to parse).
                error = type(exc).__name__
                delay = self._backoff(attempt, None)
            if attempt < self.policy.max_retries:
                await asyncio.sleep(delay)
        self.stats.failures += 1
        self.stats.add_error(error)
        return JudgeReply(None, None, error=f"{error} after "
                                            f"{self.policy.max_retries + 1} attempts")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = self.policy.backoff_seconds * 2**attempt
        # An HTTP-date Retry-After does not parse as seconds: keep the exponential delay.
        # Neither does `nan`, `inf` or a negative number: asyncio.sleep(nan) never returns.
        if retry_after is not None:
            with contextlib.suppress(ValueError, OverflowError):
                given = float(retry_after)
                if math.isfinite(given) and given >= 0:
                    delay = given
        return min(max(delay, 0.0), self.policy.max_backoff_seconds)

    def _headers(self) -> dict[str, str]:
        key = self.endpoint.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _payload(self, prompt: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.policy.max_tokens,
        }
        if self.policy.request_logprobs:
            payload |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        return payload

    def _parse(self, body: Any) -> JudgeReply:
        """The reply in a chat completion body, or ValueError for any body that is not one
        (wrong types, missing fields, absurd numbers): an invalid output, never a crash."""
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
            usage = body.get("usage") or {}
            if not isinstance(usage, dict):
                raise TypeError("usage is not an object")
            prompt_tokens = _token_count(usage.get("prompt_tokens"))
            completion_tokens = _token_count(usage.get("completion_tokens"))
            alternatives = _first_token_alternatives(choice.get("logprobs"))
        except (KeyError, IndexError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(f"unexpected chat completion body: {exc!r}") from exc
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        return JudgeReply(text, alternatives, prompt_tokens, completion_tokens)


# More tokens than any one call can use: a larger count is a broken server, not usage.
_MAX_TOKEN_COUNT = 10**9


def _token_count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKEN_COUNT:
        raise TypeError(f"token count {value!r} is not an integer in [0, {_MAX_TOKEN_COUNT}]")
    return value


def _first_token_alternatives(logprobs: Any) -> list[tuple[str, float]] | None:
    """Top alternatives at the first output token that is not whitespace. Alternatives with
    a non-string token or a logprob that is not a finite number <= 0 are dropped."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return None
    for entry in logprobs["content"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str) \
                or not entry["token"].strip():
            continue
        alternatives = entry.get("top_logprobs") or [entry]
        if not isinstance(alternatives, list):
            return None
        return [(a["token"], float(a["logprob"])) for a in alternatives
                if isinstance(a, dict) and isinstance(a.get("token"), str)
                and _is_logprob(a.get("logprob"))]
    return None


def _is_logprob(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value <= 0.0)


def _reply_from_cache(entry: dict[str, Any]) -> JudgeReply:
    top = entry.get("top_logprobs")
    return JudgeReply(entry["text"], [(str(t), float(lp)) for t, lp in top] if top else None,
                      int(entry.get("prompt_tokens", 0)), int(entry.get("completion_tokens", 0)),
                      cached=True)


# A judge verdict is a few tokens (plus top logprobs): a reply of a mebibyte is already far
# past any honest answer. Bodies are read up to this many bytes and refused beyond it, so a
# hostile or broken endpoint cannot fill the stage's memory (a 400 MiB reply used to be read
# whole, 1.2 GB resident).
MAX_JUDGE_BODY_BYTES = 1 << 20


class JudgeBodyTooLarge(ValueError):
    """A judge reply larger than MAX_JUDGE_BODY_BYTES (an invalid output, not a crash)."""


async def read_bounded(response: aiohttp.ClientResponse, limit: int, *,
                       truncate: bool = False) -> bytes:
    """At most `limit` bytes of the body: more raises JudgeBodyTooLarge, or, with `truncate`
    (error bodies, shown in messages), returns the first `limit` bytes. A Content-Length over
    the limit is refused before anything is read."""
    declared = response.content_length
    if declared is not None and declared > limit and not truncate:
        raise JudgeBodyTooLarge(f"Content-Length {declared} > {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 << 10):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if truncate:
                return b"".join(chunks)[:limit]
            raise JudgeBodyTooLarge(f"body over {limit} bytes")
    return b"".join(chunks)


def first_served_model(base_url: str, api_key: str | None = None,
                       timeout_seconds: float = 30.0) -> str:
    """The first model id of the server's ``/v1/models`` (when eval.judge.model is unset).

    The key goes to the configured host only: a redirect is refused, not followed (urllib
    followed one to another host with the Authorization header). `timeout_seconds` bounds the
    whole exchange, body included, so a server dripping a byte at a time cannot outlive it;
    the body is read up to MAX_JUDGE_BODY_BYTES."""
    url = base_url.rstrip("/").removesuffix("/v1") + "/v1/models"
    try:
        body = asyncio.run(_get_models(url, api_key, timeout_seconds))
        return str(json.loads(body)["data"][0]["id"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError,
            TypeError) as exc:  # JudgeBodyTooLarge is a ValueError
        reason = "no answer within the timeout" if isinstance(exc, TimeoutError) else exc
        raise EvalError("EVAL_JUDGE_UNREACHABLE",
                        f"cannot list the judge's models at {url} ({reason}). Check "
                        "eval.judge.base_url, or set eval.judge.model explicitly.") from exc


async def _get_models(url: str, api_key: str | None, timeout_seconds: float) -> bytes:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with asyncio.timeout(timeout_seconds), \
            aiohttp.ClientSession(timeout=timeout) as session, \
            session.get(url, headers=headers, allow_redirects=False) as response:
        if 300 <= response.status < 400:
            raise ValueError(f"HTTP {response.status} redirect to "
                             f"{response.headers.get('Location', '?')[:200]!r} refused: the key "
                             "is sent to the configured URL only; configure the final URL")
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        return await read_bounded(response, MAX_JUDGE_BODY_BYTES)
