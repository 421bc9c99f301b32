"""The local engine's service layer: admission (bounded running + waiting), worker threads,
metrics, and OpenAI-format response bodies. The HTTP routes (app.py) only call into this.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from serving.local.engine_metrics import EngineMetrics
from serving.local.generation import GenerationResult, run_generation
from serving.local.model import LocalModel, SamplingParams, TokenLogprob
from serving.local.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    stop_list,
)


class ApiError(Exception):
    """A request the server refuses; rendered in vLLM's error format with `status_code`."""

    def __init__(self, status_code: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param

    @property
    def error_type(self) -> str:
        return {400: "BadRequestError", 404: "NotFoundError", 413: "BadRequestError",
                503: "ServiceUnavailableError"}.get(self.status_code, "InternalServerError")


@dataclass(frozen=True)
class ServiceLimits:
    max_running_requests: int = 4
    max_waiting_requests: int = 64


class LocalService:
    def __init__(self, model: LocalModel, served_model_name: str, model_dir: str,
                 limits: ServiceLimits) -> None:
        self.model = model
        self.served_model_name = served_model_name
        self.model_dir = model_dir
        self.limits = limits
        self.metrics = EngineMetrics(served_model_name)
        self._executor = ThreadPoolExecutor(max_workers=limits.max_running_requests,
                                            thread_name_prefix="generate")
        self._slots = asyncio.Semaphore(limits.max_running_requests)
        self._num_waiting = 0
        self._num_running = 0
        self.created = int(time.time())

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- admission ---------------------------------------------------------------------------
    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._num_waiting >= self.limits.max_waiting_requests:
            raise ApiError(503, f"server at capacity: {self._num_waiting} requests waiting "
                           f"(limit {self.limits.max_waiting_requests}); retry later")
        self._set_waiting(+1)
        try:
            await self._slots.acquire()
        finally:
            self._set_waiting(-1)
        self._set_running(+1)
        try:
            yield
        finally:
            self._set_running(-1)
            self._slots.release()

    def _set_waiting(self, delta: int) -> None:
        self._num_waiting += delta
        self.metrics.waiting.set(self._num_waiting)

    def _set_running(self, delta: int) -> None:
        self._num_running += delta
        self.metrics.running.set(self._num_running)

    # -- requests ----------------------------------------------------------------------------
    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.served_model_name:
            raise ApiError(404, f"The model `{name}` does not exist.", param="model")

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": self.served_model_name, "object": "model", "created": self.created,
            "owned_by": "shipyard", "root": self.model_dir, "parent": None,
            "max_model_len": self.model.max_model_len,
        }]}

    def completion_prompts(self, request: CompletionRequest) -> list[tuple[list[int], str]]:
        """(prompt ids, prompt text) for each prompt of a completions request."""
        prompt = request.prompt
        if isinstance(prompt, str):
            items: list[str | list[int]] = [prompt]
        elif prompt and isinstance(prompt[0], int):
            items = [list(prompt)]
        else:
            items = list(prompt)  # type: ignore[arg-type]
        out = []
        for item in items:
            if isinstance(item, str):
                out.append((self.model.encode(item), item))
            else:
                self._check_token_ids(item)
                out.append((list(item), self.model.decode(item, skip_special_tokens=False)))
        return out

    def _check_token_ids(self, ids: Sequence[int]) -> None:
        vocab = int(self.model.model.config.vocab_size)
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad or not ids:
            raise ApiError(400, f"prompt token ids must be in [0, {vocab}) and non-empty; "
                           f"got {bad[:5] or 'an empty list'}", param="prompt")

    def resolve_max_tokens(self, num_prompt_tokens: int, requested: int | None) -> int:
        """vLLM's rules: max_tokens above the context is a 400, so is a prompt that leaves no
        room; otherwise max_tokens is capped to what the context has left."""
        context = self.model.max_model_len
        if requested is not None and requested > context:
            raise ApiError(400, f"max_tokens={requested} cannot be greater than "
                           f"max_model_len={context}. Please request fewer output tokens.",
                           param="max_tokens")
        room = context - num_prompt_tokens
        if room < 0 or (room == 0 and requested != 0):
            raise ApiError(
                400,
                f"This model's maximum context length is {context} tokens. However, your "
                f"prompt contains {num_prompt_tokens} input tokens, which leaves no room for "
                "output tokens. Please reduce the length of the input prompt.",
                param="input_tokens",
            )
        return room if requested is None else min(requested, room)

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        stop: Sequence[str],
        *,
        prompt_top_k: int | None = None,
        on_delta: Callable[[str, TokenLogprob | None], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> GenerationResult:
        arrival = time.monotonic()
        cancelled = cancelled or threading.Event()
        async with self._slot():
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                self._executor,
                lambda: run_generation(self.model, prompt_ids, params, stop,
                                       prompt_top_k=prompt_top_k, cancelled=cancelled,
                                       on_delta=on_delta),
            )
            try:
                # shield: a cancelled request waits for its worker to notice, keeping the
                # slot accounting true to what is really running
                result = await asyncio.shield(future)
            except asyncio.CancelledError:
                cancelled.set()
                await asyncio.wait([future])
                raise
        self._record(arrival, result)
        return result

    def _record(self, arrival: float, result: GenerationResult) -> None:
        metrics = self.metrics
        metrics.prompt_tokens.inc(len(result.prompt_ids))
        metrics.generation_tokens.inc(len(result.token_ids))
        times = result.token_times
        if times:
            metrics.ttft.observe(times[0] - arrival)
            for previous, current in itertools.pairwise(times):
                metrics.itl.observe(current - previous)
        metrics.e2e.observe(time.monotonic() - arrival)
        if result.finish_reason != "abort":
            metrics.request_succeeded(result.finish_reason)

    # -- response bodies ---------------------------------------------------------------------
    def completion_choice(self, index: int, prompt_text: str, result: GenerationResult,
                          request: CompletionRequest) -> dict[str, Any]:
        text = (prompt_text if request.echo else "") + result.text
        logprobs = None
        if request.logprobs is not None:
            entries: list[TokenLogprob | None] = []
            if request.echo:
                entries.extend(result.prompt_logprobs or [None] * len(result.prompt_ids))
            entries.extend(result.logprobs)
            token_ids = (result.prompt_ids if request.echo else []) + result.token_ids
            logprobs = self._legacy_logprobs(token_ids, entries,
                                             as_ids=request.return_tokens_as_token_ids)
        return {"index": index, "text": text, "logprobs": logprobs,
                "finish_reason": result.finish_reason, "stop_reason": None}

    def _legacy_logprobs(self, token_ids: list[int], entries: list[TokenLogprob | None], *,
                         as_ids: bool = False) -> dict[str, Any]:
        texts = [self.model.token_text(t) for t in token_ids]
        offsets, position = [], 0
        for text in texts:
            offsets.append(position)
            position += len(text)

        def name(token_id: int) -> str:  # vLLM's return_tokens_as_token_ids format
            return f"token_id:{token_id}" if as_ids else self.model.token_text(token_id)

        top: list[dict[str, float] | None] = []
        for entry in entries:
            if entry is None:
                top.append(None)
            else:
                top.append({name(t): lp for t, lp in entry.top.items()})
        tokens = [name(t) for t in token_ids]
        return {
            "tokens": tokens,
            "token_logprobs": [None if e is None else e.logprob for e in entries],
            "top_logprobs": top,
            "text_offset": offsets,
        }

    def chat_logprobs(self, result: GenerationResult, top_k: int) -> dict[str, Any]:
        content = []
        for entry in result.logprobs:
            token = self.model.token_text(entry.token_id)
            alternatives = sorted(entry.top.items(), key=lambda kv: -kv[1])[:top_k]
            content.append({
                "token": token, "logprob": entry.logprob, "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": (t := self.model.token_text(i)), "logprob": lp,
                     "bytes": list(t.encode())}
                    for i, lp in alternatives
                ],
            })
        return {"content": content}

    @staticmethod
    def usage(results: Sequence[GenerationResult]) -> dict[str, int]:
        prompt = sum(len(r.prompt_ids) for r in results)
        completion = sum(len(r.token_ids) for r in results)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"

    def chat_prompt(self, chat: Sequence[ChatMessage], *,
                    add_generation_prompt: bool = True) -> list[int]:
        try:
            messages = [{"role": m.role, "content": m.text()} for m in chat]
            return self.model.render_chat(messages, add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # the chat template raises for conversations it refuses
            raise ApiError(400, f"cannot apply the chat template: {exc}",
                           param="messages") from exc


def sampling_params(request: CompletionRequest | ChatCompletionRequest, max_tokens: int,
                    top_logprobs: int | None) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=request.temperature,
                          top_p=request.top_p, seed=request.seed, top_logprobs=top_logprobs)


def stops(request: CompletionRequest | ChatCompletionRequest) -> list[str]:
    return stop_list(request.stop)
