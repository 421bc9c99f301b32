"""The local engine's 1 MiB request limit holds for chunked bodies too (issue #19 item 4: a
Transfer-Encoding: chunked body had no Content-Length to check and was read whole)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from serving.local.app import MAX_REQUEST_BYTES, build_app
from serving.local.model import LocalModel
from serving.local.service import LocalService, ServiceLimits
from testing.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration
NAME = "tiny"


@pytest.fixture(scope="module")
def engine_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    model_dir = build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    service = LocalService(LocalModel(Path(model_dir)), NAME, str(model_dir), ServiceLimits())
    server = uvicorn.Server(uvicorn.Config(build_app(service), log_level="warning",
                                           access_log=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    service.close()


def _post_chunked(port: int, pieces: Iterator[bytes]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/completions", body=pieces, encode_chunked=True,
                     headers={"Content-Type": "application/json",
                              "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_chunked_body_above_the_limit_gets_413_json(engine_port: int) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(24):  # 1.5 MiB, above the 1 MiB limit, never announced
            yield b"x" * (64 << 10)
        yield b'", "max_tokens": 1}'

    status, body = _post_chunked(engine_port, pieces())
    assert status == 413
    assert body["error"]["code"] == 413 and str(MAX_REQUEST_BYTES) in body["error"]["message"]


def test_a_chunked_body_within_the_limit_is_served(engine_port: int) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "tiny", '
        yield b'"prompt": "hello", "max_tokens": 1}'

    status, body = _post_chunked(engine_port, pieces())
    assert status == 200 and body["object"] == "text_completion"


def test_an_announced_body_above_the_limit_is_refused_unread(engine_port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", engine_port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/completions")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(MAX_REQUEST_BYTES + 1))
        conn.endheaders()  # no body sent: the answer must not wait for it
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == 413
    finally:
        conn.close()
