"""Connection bounds of the router's serving port: how long a client may take to send a request
(slowloris) and how many connections it may hold open; past the cap a new one gets a 503."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

logger = logging.getLogger(__name__)

# Slowloris bounds: the request head must arrive within this long of connecting (aiohttp
# closes a connection whose next request is not complete when its keep-alive timer fires, and
# starts that timer at connect), the body within BODY_READ_TIMEOUT_SECONDS of the head.
DEFAULT_HEADER_TIMEOUT_SECONDS = 15.0
BODY_READ_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_CONNECTIONS = 512
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                  b"Content-Length: 0\r\nConnection: close\r\n\r\n")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class _Busy(asyncio.Protocol):
    """A connection past the limit: one 503 and closed, before reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY_RESPONSE)
        transport.close()


class CappedServer:
    """Protocol factory for the serving listener: aiohttp's handler while fewer than
    `max_connections` are open (aiohttp has no such limit of its own), else `_Busy`."""

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self.server = server
        self.max_connections = max_connections

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) >= self.max_connections:
            logger.warning("refused a connection: %d open (--max-connections)",
                           len(self.server.connections))
            return _Busy()
        return self.server()

