"""The local weighted router: one loopback port in front of the stable and canary engines.

    python -m serving.router --port P --backend stable=http://127.0.0.1:A --weight stable=100

- Traffic split: smooth weighted round-robin (nginx's), so 10 % means exactly one request in
  ten, not "about 10 % on average": a short bake sees the split it asked for.
- Weights, backends and faults change at run time through `/admin/*`, served on a listener of
  its own (a second loopback port, never the serving port) that answers only requests with
  the deployment's bearer token (kept in a 0600 file), a loopback `Host` (no DNS rebinding)
  and, for changes, `Content-Type: application/json`. Backends must be loopback URLs listed in
  the deployment's allow-list file: the router routes only to the deployment's own engines.
  A request keeps the backend it was routed to, so a change never drops or reroutes one in
  flight.
- No unsupervised canary: a positive weight on any backend but `stable` holds a lease
  (`lease_seconds` in the change, else `--canary-lease-seconds`). The controller renews it
  (`POST /admin/lease`) while it bakes; when it lapses (the controller was SIGKILLed, hung or
  lost) the router itself puts all traffic back on `stable` and refuses later renewals (409),
  so a dead rollout never keeps users on its canary.
- Bounded connections: a client must send a whole request head within
  `--header-timeout-seconds` of connecting (or of its previous response) and its body within
  `BODY_READ_TIMEOUT_SECONDS`; past `--max-connections` open connections a new one is answered
  503 and closed. A slowloris client that drips its headers is disconnected.
- `/v1/models` answers with the engines' model list minus local paths (`root`, `parent`).
- Fault injection per backend (added latency before forwarding, an error rate answered by the
  router itself) works the same in front of vLLM and the local engine.
- `/metrics` has what clients saw, per backend: status codes, time to first byte (first
  token when streaming), gaps between streamed chunks (inter-token latency), end-to-end.
  Injected faults show up there, as they would for a real client.

This module is the serving listener (proxy, health, metrics) and the CLI; the parts live in
router_table (weights, faults, lease), router_control (the `/admin/*` handlers),
router_admin (who may call them), router_limits (connection bounds), router_metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
import urllib.parse
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.router_admin import (
    AdminGuard,
    BackendAllowList,
    read_admin_token,
)
from serving.router_control import RouterControl
from serving.router_limits import (
    BODY_READ_TIMEOUT_SECONDS,
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    CappedServer,
    ConnectionLimits,
)
from serving.router_metrics import RouterMetrics
from serving.router_table import (
    DEFAULT_CANARY_LEASE_SECONDS,
    STABLE,
    FaultSpec,
    LeaseLost,
    RoutingTable,
)

# Re-exported: deploy/, tests and benchmarks import these from here.
__all__ = ["BACKEND_HEADER", "BODY_READ_TIMEOUT_SECONDS", "DEFAULT_CANARY_LEASE_SECONDS",
           "DEFAULT_HEADER_TIMEOUT_SECONDS", "DEFAULT_MAX_CONNECTIONS", "MAX_BODY_BYTES",
           "ROUTED_PREFIXES", "STABLE", "CappedServer", "ConnectionLimits", "FaultSpec",
           "LeaseLost", "Router", "RouterMetrics", "RoutingTable", "is_routed_path", "main"]

logger = logging.getLogger(__name__)

BACKEND_HEADER = "x-shipyard-backend"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailers", "transfer-encoding", "upgrade", "host",
                         "content-length"})
ROUTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize", "/tokenizer_info")
# Request bodies above this are refused (413), chunked uploads included: aiohttp counts the
# bytes it reads whatever the framing.
MAX_BODY_BYTES = 2 << 20

def is_routed_path(raw_path: str) -> bool:
    """Whether a request path is one the router forwards. The raw path is what is forwarded,
    so it is what is checked: after percent-decoding it must start with a routed prefix and hold
    no dot segment and no backslash (`/v1/../admin` and `/v1/%2e%2e/admin` would leave the
    allow-list on an engine that normalizes the path)."""
    decoded = urllib.parse.unquote(raw_path)
    if "\\" in decoded or any(part in (".", "..") for part in decoded.split("/")):
        return False
    return decoded.startswith(ROUTED_PREFIXES) and raw_path.startswith(ROUTED_PREFIXES)


# Fields of an OpenAI model card that carry a local filesystem path on vLLM.
_PATH_FIELDS = ("root", "parent")


class Router(RouterControl):
    """The serving listener: health, metrics and the proxy; the admin handlers are
    `RouterControl`'s (serving/router_control.py)."""

    def __init__(self, table: RoutingTable, *, seed: int = 0,
                 allow_list: BackendAllowList | None = None) -> None:
        self.table = table
        self.allow_list = allow_list or BackendAllowList(None)
        self.metrics = RouterMetrics()
        self._random = random.Random(seed)
        self._in_flight: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._refresh_weight_gauges()

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_startup(self, _: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=30)
        # No total timeout: a long generation is normal; connect failures surface fast.
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=600)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                              auto_decompress=False)

    async def on_cleanup(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def build_app(self) -> web.Application:
        """The serving listener: health, metrics and the proxied API; no admin routes."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.on_startup.append(self.on_startup)
        app.on_cleanup.append(self.on_cleanup)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        return app

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metrics_page(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- proxy -------------------------------------------------------------------------------
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        if not is_routed_path(request.rel_url.raw_path):
            return web.json_response({"error": {"message": f"no route {request.path}",
                                                "type": "NotFoundError", "code": 404}},
                                     status=404)
        picked = self.table.pick()
        if picked is None:
            return web.json_response({"error": {"message": "no backend has a positive weight",
                                                "type": "ServiceUnavailableError",
                                                "code": 503}}, status=503)
        name, base_url = picked
        received = time.perf_counter()
        # In flight by URL, not by name: after a promotion "stable" names the new engine
        # while the old one still finishes its requests, and drain waits on the old URL.
        self._in_flight[base_url] = self._in_flight.get(base_url, 0) + 1
        self.metrics.in_flight.labels(backend=name).inc()
        status = 502
        try:
            status, response = await self._forward(request, name, base_url, received)
            return response
        finally:
            self._in_flight[base_url] -= 1
            self.metrics.in_flight.labels(backend=name).dec()
            self.metrics.requests.labels(backend=name, code=str(status)).inc()
            self.metrics.e2e.labels(backend=name).observe(time.perf_counter() - received)

    async def _forward(self, request: web.Request, name: str, base_url: str,
                       received: float) -> tuple[int, web.StreamResponse]:
        fault = self.table.faults.get(name)
        if fault is not None and fault.added_latency_seconds > 0:
            self.metrics.faults.labels(backend=name, kind="latency").inc()
            await asyncio.sleep(fault.added_latency_seconds)
        if fault is not None and fault.error_rate > 0 and self._random.random() < fault.error_rate:
            self.metrics.faults.labels(backend=name, kind="error").inc()
            self.metrics.ttft.labels(backend=name).observe(time.perf_counter() - received)
            return fault.error_status, web.json_response(
                {"error": {"message": f"injected fault on backend {name}",
                           "type": "InjectedFault", "code": fault.error_status}},
                status=fault.error_status, headers={BACKEND_HEADER: name})
        assert self._session is not None
        try:  # a body dripped byte by byte holds a connection no longer than this
            async with asyncio.timeout(BODY_READ_TIMEOUT_SECONDS):
                body = await request.read()
        except TimeoutError:
            return 408, web.json_response(
                {"error": {"message": f"request body not received within "
                           f"{BODY_READ_TIMEOUT_SECONDS:.0f} s", "type": "RequestTimeout",
                           "code": 408}}, status=408, headers={"Connection": "close"})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            upstream = await self._session.request(
                request.method, base_url + request.rel_url.raw_path_qs, data=body,
                headers=headers)
        except (aiohttp.ClientError, OSError) as exc:
            return 502, web.json_response(
                {"error": {"message": f"backend {name} unreachable: {exc}",
                           "type": "BadGateway", "code": 502}},
                status=502, headers={BACKEND_HEADER: name})
        async with upstream:
            if request.path == "/v1/models" and upstream.status == 200:
                return upstream.status, await self._models_without_paths(upstream, name,
                                                                          received)
            response = web.StreamResponse(status=upstream.status, headers={
                **{k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP},
                BACKEND_HEADER: name,
            })
            streaming = upstream.headers.get("content-type", "").startswith("text/event-stream")
            await self._copy_body(upstream, response, request, name, received, streaming)
            return upstream.status, response

    async def _models_without_paths(self, upstream: aiohttp.ClientResponse, name: str,
                                    received: float) -> web.Response:
        """vLLM's model cards carry the model directory (`root`): a client learns nothing
        about the host's filesystem from the router."""
        self.metrics.ttft.labels(backend=name).observe(time.perf_counter() - received)
        try:
            listing = json.loads(await upstream.read())
            for card in listing.get("data", []):
                for key in _PATH_FIELDS:
                    if isinstance(card.get(key), str) and "/" in card[key]:
                        card[key] = card.get("id")
        except (ValueError, AttributeError, TypeError):
            return web.json_response({"error": {"message": "backend sent a malformed model "
                                                "list", "type": "BadGateway", "code": 502}},
                                     status=502, headers={BACKEND_HEADER: name})
        return web.json_response(listing, headers={BACKEND_HEADER: name})

    async def _copy_body(self, upstream: aiohttp.ClientResponse, response: web.StreamResponse,
                         request: web.Request, name: str, received: float,
                         streaming: bool) -> None:
        previous: float | None = None
        prepared = False
        async for chunk in upstream.content.iter_any():
            now = time.perf_counter()
            if previous is None:
                self.metrics.ttft.labels(backend=name).observe(now - received)
            elif streaming:
                self.metrics.itl.labels(backend=name).observe(now - previous)
            previous = now
            if not prepared:
                await response.prepare(request)
                prepared = True
            await response.write(chunk)
        if not prepared:
            self.metrics.ttft.labels(backend=name).observe(time.perf_counter() - received)
            await response.prepare(request)
        await response.write_eof()


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"--{what} {value!r}: expected NAME=VALUE")
        out[name] = rest
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.router")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", default=[], help="NAME=http://HOST:PORT")
    parser.add_argument("--weight", action="append", default=[], help="NAME=INT")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault-injection RNG")
    parser.add_argument("--admin-port", type=int, required=True,
                        help="loopback port of the admin listener")
    parser.add_argument("--admin-token-file", type=Path, required=True,
                        help="file holding the admin bearer token (mode 0600)")
    parser.add_argument("--allowed-backends-file", type=Path, default=None,
                        help="JSON list of the base URLs the router may route to")
    parser.add_argument("--canary-lease-seconds", type=float,
                        default=DEFAULT_CANARY_LEASE_SECONDS,
                        help="lease of a canary weight set without lease_seconds")
    parser.add_argument("--header-timeout-seconds", type=float,
                        default=DEFAULT_HEADER_TIMEOUT_SECONDS,
                        help="a request head must arrive within this long (slowloris bound)")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help="open client connections on the serving port; more get 503")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.canary_lease_seconds <= 0 or args.header_timeout_seconds <= 0 \
            or args.max_connections < 1:
        raise SystemExit("--canary-lease-seconds and --header-timeout-seconds must be > 0, "
                         "--max-connections >= 1")
    table = RoutingTable(default_lease_seconds=args.canary_lease_seconds)
    try:
        weights = {k: int(v) for k, v in _pairs(args.weight, "weight").items()}
        table.set(backends=_pairs(args.backend, "backend"), weights=weights)
    except ValueError as exc:
        raise SystemExit(f"invalid routing: {exc}") from exc
    token = read_admin_token(args.admin_token_file)
    allow_list = BackendAllowList(args.allowed_backends_file)
    refused = allow_list.refused(table.backends.values())
    if refused:
        raise SystemExit(f"invalid routing: backends {refused} are not in the allow-list")
    router = Router(table, seed=args.seed, allow_list=allow_list)
    limits = ConnectionLimits(args.header_timeout_seconds, args.max_connections)
    asyncio.run(_serve(router, args.host, args.port, AdminGuard(token, args.admin_port),
                       args.admin_port, limits))
    return 0


async def _serve(router: Router, host: str, port: int, guard: AdminGuard,
                 admin_port: int, limits: ConnectionLimits) -> None:
    """Both listeners until SIGTERM/SIGINT; then stop accepting and let in-flight requests
    finish (up to 30 s), as aiohttp's run_app does."""
    import signal

    # keepalive_timeout doubles as the header timeout: aiohttp arms it at connect and closes
    # a connection still waiting for a complete request head when it fires.
    timeout = limits.header_timeout_seconds
    runners = [web.AppRunner(router.build_app(), access_log=None, shutdown_timeout=30.0,
                             keepalive_timeout=timeout),
               web.AppRunner(router.build_admin_app(guard), access_log=None,
                             keepalive_timeout=timeout)]
    for runner in runners:
        await runner.setup()
    loop = asyncio.get_running_loop()
    assert runners[0].server is not None
    listener = await loop.create_server(CappedServer(runners[0].server,
                                                     limits.max_connections), host, port)
    await web.TCPSite(runners[1], "127.0.0.1", admin_port).start()
    watcher = asyncio.create_task(router.watch_lease())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    watcher.cancel()
    listener.close()
    for runner in reversed(runners):
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
