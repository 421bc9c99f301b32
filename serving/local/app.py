"""HTTP routes of the local engine (vLLM's OpenAI server layout: routes here, typed requests in
protocol.py, work in service.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.local.model import TokenLogprob
from serving.local.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from serving.local.service import (
    ApiError,
    LocalService,
    sampling_params,
    stops,
)

# Bounded request size: bodies above this are refused before being read into memory, whether
# they announce a Content-Length or arrive chunked (Transfer-Encoding: chunked).
MAX_REQUEST_BYTES = 1 << 20


class BodyLimit:
    """ASGI middleware: the request body is read here, at most `max_bytes` of it, before the
    app sees it; a body announcing more, or streaming more, gets a 413 JSON error and the
    rest is never read. FastAPI would read a chunked body whole before any handler ran."""

    def __init__(self, app: ASGIApp, max_bytes: int, service: LocalService) -> None:
        self.app, self.max_bytes, self.service = app, max_bytes, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, send, f"request body of {int(length)} bytes exceeds the "
                               f"limit of {self.max_bytes} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_bytes:
                await self._refuse(scope, send, f"streamed request body exceeds the limit of "
                                   f"{self.max_bytes} bytes")
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, scope: Scope, send: Send, message: str) -> None:
        self.service.metrics.http_request("none", scope.get("method", ""), 413)
        await _error(ApiError(413, message))(scope, _no_body, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the buffered body over once, then defers to the connection (so a
    disconnect during a streamed reply is still seen)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replay


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def build_app(service: LocalService) -> FastAPI:
    app = FastAPI(title="shipyard local engine", docs_url=None, redoc_url=None)
    app.state.service = service

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        handler = getattr(route, "path", "none")
        service.metrics.http_request(handler, request.method, response.status_code)
        return response

    # Added last, so outermost: the body is bounded before any other middleware reads it.
    app.add_middleware(BodyLimit, max_bytes=MAX_REQUEST_BYTES, service=service)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # vLLM answers malformed requests with 400 (not FastAPI's 422)
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in exc.errors()
        )
        return _error(ApiError(400, f"invalid request: {details}"))

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return service.models()

    @app.post("/tokenize")
    async def tokenize(request: TokenizeRequest) -> dict[str, Any]:
        service.check_model(request.model)
        if request.messages is not None:
            ids = service.chat_prompt(request.messages,
                                      add_generation_prompt=request.add_generation_prompt)
        else:
            assert request.prompt is not None  # TokenizeRequest: exactly one of the two
            ids = service.model.encode(request.prompt,
                                       add_special_tokens=request.add_special_tokens)
        return {"count": len(ids), "max_model_len": service.model.max_model_len, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(request: DetokenizeRequest) -> dict[str, Any]:
        service.check_model(request.model)
        return {"prompt": service.model.decode(request.tokens, skip_special_tokens=False)}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        return await _completions(service, request)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        return await _chat(service, request)

    return app


async def _completions(service: LocalService,
                       request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
    service.check_model(request.model)
    prompts = service.completion_prompts(request)
    if request.stream and len(prompts) > 1:
        raise ApiError(400, "streaming supports one prompt per request", param="stream")
    if request.echo and request.logprobs is not None and request.stream:
        raise ApiError(400, "echo with logprobs is not supported when streaming", param="echo")
    budgets = [service.resolve_max_tokens(len(ids), request.max_tokens) for ids, _ in prompts]
    request_id, created = service.new_id("cmpl"), int(time.time())
    prompt_top_k = request.logprobs if request.echo and request.logprobs is not None else None
    if request.stream:
        ids, text = prompts[0]
        params = sampling_params(request, budgets[0], request.logprobs)

        def chunk(delta: str, finish: str | None) -> dict[str, Any]:
            return {"id": request_id, "object": "text_completion", "created": created,
                    "model": service.served_model_name,
                    "choices": [{"index": 0, "text": delta, "logprobs": None,
                                 "finish_reason": finish}]}

        first = text if request.echo else ""
        return _sse(service, ids, params, stops(request), chunk, first_delta=first,
                    include_usage=bool(request.stream_options and
                                       request.stream_options.include_usage))
    results = await asyncio.gather(*[
        service.generate(ids, sampling_params(request, budget, request.logprobs),
                         stops(request), prompt_top_k=prompt_top_k)
        for (ids, _), budget in zip(prompts, budgets, strict=True)
    ])
    choices = [service.completion_choice(i, text, result, request)
               for i, ((_, text), result) in enumerate(zip(prompts, results, strict=True))]
    return {"id": request_id, "object": "text_completion", "created": created,
            "model": service.served_model_name, "choices": choices,
            "usage": service.usage(results)}


async def _chat(service: LocalService,
                request: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
    service.check_model(request.model)
    ids = service.chat_prompt(request.messages)
    requested = request.max_completion_tokens or request.max_tokens
    budget = service.resolve_max_tokens(len(ids), requested)
    top_k = (request.top_logprobs or 0) if request.logprobs else None
    params = sampling_params(request, budget, top_k)
    request_id, created = service.new_id("chatcmpl"), int(time.time())
    if request.stream:
        def chunk(delta: str, finish: str | None) -> dict[str, Any]:
            return {"id": request_id, "object": "chat.completion.chunk", "created": created,
                    "model": service.served_model_name,
                    "choices": [{"index": 0, "delta": {"content": delta} if delta else {},
                                 "logprobs": None, "finish_reason": finish}]}

        return _sse(service, ids, params, stops(request), chunk, first_delta=None,
                    include_usage=bool(request.stream_options and
                                       request.stream_options.include_usage),
                    role_chunk={"id": request_id, "object": "chat.completion.chunk",
                                "created": created, "model": service.served_model_name,
                                "choices": [{"index": 0,
                                             "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}]})
    result = await service.generate(ids, params, stops(request))
    return {
        "id": request_id, "object": "chat.completion", "created": created,
        "model": service.served_model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": service.chat_logprobs(result, top_k) if top_k is not None else None,
            "finish_reason": result.finish_reason,
        }],
        "usage": service.usage([result]),
    }


def _sse(service: LocalService, ids: list[int], params: Any, stop: list[str], chunk: Any, *,
         first_delta: str | None, include_usage: bool,
         role_chunk: dict[str, Any] | None = None) -> StreamingResponse:
    """Server-sent events in OpenAI's format, ending with `data: [DONE]`."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    cancelled = threading.Event()

    def on_delta(delta: str, _: TokenLogprob | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, delta)

    async def run() -> Any:
        try:
            return await service.generate(ids, params, stop, on_delta=on_delta,
                                          cancelled=cancelled)
        finally:
            queue.put_nowait(None)

    async def events() -> AsyncIterator[str]:
        task = asyncio.ensure_future(run())
        pending_role = role_chunk
        try:
            if first_delta:
                yield _event(chunk(first_delta, None))
            # As vLLM does, the first event goes out with the first token, so a client's
            # time to first event is the time to first token.
            while (delta := await queue.get()) is not None:
                if pending_role is not None:
                    yield _event(pending_role)
                    pending_role = None
                yield _event(chunk(delta, None))
            if pending_role is not None:
                yield _event(pending_role)
            try:
                result = await task
            except ApiError as exc:
                yield _event({"error": {"message": exc.message, "type": exc.error_type,
                                        "param": exc.param, "code": exc.status_code}})
                return
            yield _event(chunk("", result.finish_reason))
            if include_usage:
                usage = {"id": chunk("", None)["id"], "object": chunk("", None)["object"],
                         "created": chunk("", None)["created"],
                         "model": service.served_model_name, "choices": [],
                         "usage": service.usage([result])}
                yield _event(usage)
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()  # the client went away: stop decoding for it
            if not task.done():
                task.cancel()

    return StreamingResponse(events(), media_type="text/event-stream")


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        status_code=exc.status_code,
        content={"error": {"message": exc.message, "type": exc.error_type,
                           "param": exc.param, "code": exc.status_code}},
    )
