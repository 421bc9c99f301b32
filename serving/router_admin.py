"""The router's admin surface: who may change the routing, and to what.

The admin API runs on a listener of its own (loopback, never the serving port). A request
passes `AdminGuard` (bearer token from a 0600 file, constant-time compare; loopback `Host`
against DNS rebinding; JSON content type on changes against cross-site forms), and a new
backend must be a loopback URL on the deployment's allow-list (`BackendAllowList`). The
deployment side writes the token and the allow-list and talks to the API with `AdminClient`.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from common.fs import atomic_write_text

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


class BackendAllowList:
    """The engines this router may route to: loopback base URLs read from a JSON file (a list
    of strings) that the deployment rewrites whenever it starts or stops an engine. Re-read
    on every change request, so a new engine is allowed as soon as the deployment lists it.
    `None` (no file given) allows any loopback URL: for tests and benchmarks only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def refused(self, urls: Any) -> list[str]:
        allowed: set[str] | None = None
        if self.path is not None:
            try:
                allowed = {str(u).rstrip("/") for u in json.loads(self.path.read_text())}
            except (OSError, ValueError, TypeError):
                allowed = set()  # unreadable list: fail closed
        refused = []
        for url in urls:
            host = urllib.parse.urlsplit(url).hostname or ""
            if host not in {"127.0.0.1", "localhost", "::1"} or (
                    allowed is not None and url.rstrip("/") not in allowed):
                refused.append(url)
        return refused


class AdminGuard:
    """Authentication of the admin listener: bearer token (constant-time compare), loopback
    Host header (a browser page reached through DNS rebinding sends its own host name), JSON
    content type on changes (a cross-site form cannot send it without a CORS preflight)."""

    def __init__(self, token: str, port: int) -> None:
        if len(token) < 32:
            raise ValueError("admin token must have at least 32 characters")
        self._expected = f"Bearer {token}".encode()
        self.allowed_hosts = {f"{h}:{port}" for h in LOOPBACK_HOSTS}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.host not in self.allowed_hosts:
            return _refuse(421, "MisdirectedRequest", f"Host {request.host!r} is not loopback")
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            return _refuse(401, "AuthenticationError", "missing or wrong admin bearer token")
        if request.method == "POST" and request.content_type != "application/json":
            return _refuse(415, "UnsupportedMediaType", "admin changes must be application/json")
        result: web.StreamResponse = await handler(request)
        return result


def _refuse(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}},
                             status=status)


def write_admin_token(path: Path) -> str:
    """A fresh random token in a new file only its owner can read (0600 from creation)."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def read_admin_token(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SystemExit(f"{path}: admin token file has mode {oct(mode)}; it must be 0600 "
                         f"(chmod 600 {path})")
    return path.read_text().strip()


def write_allowed_backends(path: Path, urls: list[str]) -> None:
    """Atomically replace the allow-list file (0600) with `urls`."""
    atomic_write_text(path, json.dumps(sorted(set(urls))))


class AdminClient:
    """The deployment's side of the admin API (stdlib HTTP, bearer token, 10 s deadline)."""

    def __init__(self, admin_url: str, token: str, timeout_seconds: float = 10.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._token = token
        self.timeout_seconds = timeout_seconds

    def get(self, path: str) -> dict[str, Any]:
        return self._send(urllib.request.Request(f"{self.admin_url}/admin/{path}"))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send(urllib.request.Request(
            f"{self.admin_url}/admin/{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST"))

    def _send(self, request: urllib.request.Request) -> dict[str, Any]:
        request.add_header("Authorization", f"Bearer {self._token}")
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            return dict(json.loads(response.read()))
