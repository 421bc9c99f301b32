"""Small HTTP helpers for the deploy tests (stdlib only, loopback only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    def sse_events(self) -> list[str]:
        return [line[len("data: "):] for line in self.body.decode().splitlines()
                if line.startswith("data: ")]


def request(url: str, body: Any = None, *, raw: bytes | None = None, method: str | None = None,
            timeout: float = 120.0) -> Reply:
    assert url.startswith("http://127.0.0.1:"), url
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Reply(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), dict(exc.headers))
