"""`first_served_model` sends the judge key to the configured URL only and within its deadline
(issue #19 item 7: it followed a redirect to another host with the Authorization header, and a
server dripping one byte at a time outlived the timeout)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eval.errors import EvalError
from eval.judge.client import (
    CallPolicy,
    JudgeClient,
    JudgeEndpoint,
    JudgeRequest,
    first_served_model,
)
from testing.scripted_server import Reply, ScriptedServer

pytestmark = pytest.mark.unit
KEY = "sk-judge-secret"

Answer = Callable[[BaseHTTPRequestHandler], None]


@contextmanager
def raw_server(answer: Answer, host: str = "127.0.0.1") -> Iterator[tuple[str, list[dict]]]:
    """A loopback server whose GET and POST handler is `answer`; yields its URL and the headers of
    every request it received."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            # the client giving up mid-answer is what the drip test wants
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                answer(self)

        do_POST = do_GET  # a followed 307 would arrive as a POST

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _models(handler: BaseHTTPRequestHandler) -> None:
    body = json.dumps({"object": "list", "data": [{"id": "elsewhere"}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_a_redirect_to_another_host_is_refused_and_the_key_stays_home() -> None:
    with raw_server(_models, host="127.0.0.2") as (elsewhere, stolen):
        def redirect(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", f"{elsewhere}/v1/models")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with raw_server(redirect) as (judge, _), pytest.raises(EvalError) as info:
            first_served_model(judge + "/v1", api_key=KEY, timeout_seconds=5)
    assert info.value.code == "EVAL_JUDGE_UNREACHABLE"
    assert "redirect" in info.value.message and "refused" in info.value.message
    assert stolen == []  # before: the other host got `Authorization: Bearer sk-judge-secret`


def test_a_slow_drip_cannot_outlive_the_deadline() -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):  # one byte every 0.2 s: each read succeeds, the whole never ends
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)

    with raw_server(drip) as (judge, _):
        started = time.monotonic()
        with pytest.raises(EvalError) as info:
            first_served_model(judge, api_key=KEY, timeout_seconds=1.0)
        elapsed = time.monotonic() - started
    assert info.value.code == "EVAL_JUDGE_UNREACHABLE"
    assert elapsed < 10  # the deadline is 1 s; before, the drip held the call ~200 s


def test_the_models_list_is_still_read() -> None:
    with ScriptedServer(lambda path, request, n: Reply()) as server:
        assert first_served_model(server.base_url + "/v1", api_key=KEY) == "scripted-judge"


def test_a_judge_call_redirected_elsewhere_is_refused_not_followed() -> None:
    with raw_server(_models, host="127.0.0.2") as (elsewhere, stolen):
        moved = Reply(307, {}, headers={"Location": f"{elsewhere}/v1/chat/completions"})
        with ScriptedServer(lambda path, request, n: moved) as server, \
                pytest.raises(EvalError) as info:
            JudgeClient(JudgeEndpoint(server.base_url, "scripted-judge", api_key=KEY),
                        CallPolicy(max_retries=0, timeout_seconds=5)
                        ).complete_all([JudgeRequest("p", "k")])
    assert info.value.code == "EVAL_JUDGE_REQUEST_REJECTED" and "307" in info.value.message
    assert stolen == []
