"""A scripted OpenAI-compatible server on loopback, for judge and canary tests.

It is a real HTTP server (stdlib `ThreadingHTTPServer`) on 127.0.0.1 and a port the OS picks
at start, so the code under test goes through its real HTTP client, timeouts and retries.
What it answers is a Python function of (path, request JSON, call number); every request is
recorded. Use it as a context manager: the server stops when the block ends.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Sleep before answering (longer than the client's timeout simulates a hung server).
    delay_seconds: float = 0.0


Script = Callable[[str, dict[str, Any], int], Reply]


def chat_reply(text: str, top_logprobs: list[tuple[str, float]] | None = None,
               prompt_tokens: int = 50, completion_tokens: int = 1) -> Reply:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}
    if top_logprobs is not None:
        choice["logprobs"] = {"content": [{
            "token": text, "logprob": max(lp for _, lp in top_logprobs),
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top_logprobs]}]}
    return Reply(body={"id": "chatcmpl-test", "object": "chat.completion", "model": "judge",
                       "choices": [choice],
                       "usage": {"prompt_tokens": prompt_tokens,
                                 "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}})


_PAIRWISE = re.compile(r"Instruction:\n(?P<q>.*?)\n\nAnswer A:\n(?P<a>.*?)\n\nAnswer B:\n"
                       r"(?P<b>.*?)\n\nReply", re.S)
_SINGLE = re.compile(r"Reference answer:\n(?P<ref>.*?)\n\nAnswer to grade:\n(?P<ans>.*?)\n\n"
                     r"Reply", re.S)


def parse_judge_prompt(request: dict[str, Any]) -> dict[str, str]:
    """The fields of a pairwise_v1 / single_v1 prompt (kind, question, answers)."""
    prompt = request["messages"][0]["content"]
    if match := _PAIRWISE.search(prompt):
        return {"kind": "pairwise", "question": match["q"], "a": match["a"], "b": match["b"]}
    if match := _SINGLE.search(prompt):
        return {"kind": "single", "reference": match["ref"], "answer": match["ans"]}
    raise AssertionError(f"unrecognised judge prompt: {prompt[:200]!r}")


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.max_in_flight = 0
        # Exceptions raised by the script (answered as HTTP 500); tests assert it is empty.
        self.script_errors: list[BaseException] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def num_requests(self) -> int:
        return len(self.requests)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.script_errors and exc[0] is None:
            raise AssertionError(f"the server script raised: {self.script_errors[0]!r}")

    def _answer(self, path: str, request: dict[str, Any]) -> Reply:
        with self._lock:
            call_number = len(self.requests)
            self.requests.append((path, request))
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            try:
                reply = self.script(path, request, call_number)
            except Exception as exc:  # a bug in the test's script, not a scripted failure
                self.script_errors.append(exc)
                return Reply(500, {"error": f"script raised {exc!r}"})
            if reply.delay_seconds:
                time.sleep(reply.delay_seconds)
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # /v1/models
                self._send(Reply(body={"object": "list", "data": [{"id": "scripted-judge"}]}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                self._send(server._answer(self.path, request))

            def _send(self, reply: Reply) -> None:
                data = (reply.body if isinstance(reply.body, str)
                        else json.dumps(reply.body or {})).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test): nothing to answer to

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        return Handler
