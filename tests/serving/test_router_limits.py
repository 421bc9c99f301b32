"""The router's serving port bounds what one client can hold: a request head dripped byte by
byte (slowloris) is cut off at the header timeout, and connections past the limit get a 503
and are closed. A real router process; nothing behind it is needed."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from common.settings import PROJECT_ROOT
from serving.process import free_port, spawn, stop_process_group, wait_until_healthy
from serving.router_admin import write_admin_token
from serving.vllm_engine import local_environment

pytestmark = pytest.mark.integration
HEADER_TIMEOUT_SECONDS = 1.0
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def router_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path = tmp_path_factory.mktemp("router-limits")
    port = free_port()
    write_admin_token(tmp_path / "admin.token")
    process = spawn([sys.executable, "-m", "serving.router", "--port", str(port),
                     "--backend", "stable=http://127.0.0.1:9", "--weight", "stable=100",
                     "--admin-port", str(free_port()),
                     "--admin-token-file", str(tmp_path / "admin.token"),
                     "--header-timeout-seconds", str(HEADER_TIMEOUT_SECONDS),
                     "--max-connections", str(MAX_CONNECTIONS)],
                    env=local_environment(os.environ, PROJECT_ROOT),
                    log_path=tmp_path / "router.log", cwd=PROJECT_ROOT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", process, pid=process.pid,
                           timeout_seconds=30, log_path=tmp_path / "router.log", what="router")
        yield port
    finally:
        stop_process_group(process.pid, process, grace_seconds=5)


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the router closed the connection (EOF or reset on read/write)."""
    try:
        sock.settimeout(0.05)
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_client_that_drips_its_headers_is_disconnected(router_port: int) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", router_port)) as sock:
        deadline = time.monotonic() + 20 * HEADER_TIMEOUT_SECONDS
        sent = 0
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(head[sent % len(head):sent % len(head) + 1])  # one byte at a time
            except OSError:
                closed = True
                break
            sent += 1
            closed = _closed_by_peer(sock)
            time.sleep(0.05)
        assert closed, f"the router still held a dripping connection after {sent} bytes"
        assert sent < len(head) * 3  # cut off while the head was still incomplete


def test_connections_past_the_limit_get_503_and_are_closed(router_port: int) -> None:
    held = [socket.create_connection(("127.0.0.1", router_port))
            for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # let the router accept them
        with socket.create_connection(("127.0.0.1", router_port)) as extra:
            extra.settimeout(5)
            reply = extra.recv(4096)
            assert reply.startswith(b"HTTP/1.1 503")
            assert extra.recv(4096) == b""  # and closed
    finally:
        for sock in held:
            sock.close()
    # held connections gone: the port serves again
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", router_port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
