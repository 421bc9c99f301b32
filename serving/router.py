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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from serving.router_admin import (
    AdminGuard,
    BackendAllowList,
    read_admin_token,
)

logger = logging.getLogger(__name__)

BACKEND_HEADER = "x-shipyard-backend"
# Finer than vLLM's buckets at the low end: the router must resolve a tiny model's latencies.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
                   0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailers", "transfer-encoding", "upgrade", "host",
                         "content-length"})
ROUTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize", "/tokenizer_info")
# Request bodies above this are refused (413), chunked uploads included: aiohttp counts the
# bytes it reads whatever the framing.
MAX_BODY_BYTES = 2 << 20
STABLE = "stable"
# A canary weight set without `lease_seconds` holds this long unless renewed.
DEFAULT_CANARY_LEASE_SECONDS = 60.0
# Slowloris bounds: the request head must arrive within this long of connecting (aiohttp
# closes a connection whose next request is not complete when its keep-alive timer fires, and
# starts that timer at connect), the body within BODY_READ_TIMEOUT_SECONDS of the head.
DEFAULT_HEADER_TIMEOUT_SECONDS = 15.0
BODY_READ_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_CONNECTIONS = 512
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                  b"Content-Length: 0\r\nConnection: close\r\n\r\n")

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


@dataclass(frozen=True)
class FaultSpec:
    added_latency_seconds: float = 0.0
    error_rate: float = 0.0  # fraction of requests the router answers with `error_status`
    error_status: int = 503

    def __post_init__(self) -> None:
        if self.added_latency_seconds < 0 or not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("added_latency_seconds must be >= 0 and error_rate in [0, 1]")
        if not 400 <= self.error_status <= 599:
            raise ValueError("error_status must be a 4xx or 5xx code")


class LeaseLost(ValueError):
    """A renewal came after the canary lease lapsed (the router already reverted)."""


@dataclass
class RoutingTable:
    backends: dict[str, str] = field(default_factory=dict)  # name -> base URL
    weights: dict[str, int] = field(default_factory=dict)
    faults: dict[str, FaultSpec] = field(default_factory=dict)
    default_lease_seconds: float = DEFAULT_CANARY_LEASE_SECONDS
    clock: Callable[[], float] = time.monotonic
    # While a backend other than `stable` has a positive weight: when that weight lapses
    # (clock seconds), unless renewed. None: nothing to supervise.
    lease_expires_at: float | None = None
    lease_seconds: float | None = None
    lapsed: list[dict[str, Any]] = field(default_factory=list)  # what each lapse reverted
    _current: dict[str, int] = field(default_factory=dict)

    def set(self, backends: Mapping[str, str] | None = None,
            weights: Mapping[str, int] | None = None,
            lease_seconds: float | None = None) -> None:
        new_backends = dict(self.backends if backends is None else backends)
        new_weights = dict(self.weights if weights is None else weights)
        new_weights = {n: w for n, w in new_weights.items() if n in new_backends}
        unknown = sorted(set(weights or {}) - set(new_backends))
        if unknown:
            raise ValueError(f"weights for unknown backends {unknown}")
        if any(w < 0 for w in new_weights.values()):
            raise ValueError("weights must be >= 0")
        if new_backends and sum(new_weights.values()) <= 0:
            raise ValueError("at least one backend needs a positive weight")
        if lease_seconds is not None and not 0 < lease_seconds <= 3600:
            raise ValueError("lease_seconds must be in (0, 3600]")
        self.backends, self.weights = new_backends, new_weights
        self._current = {n: 0 for n in new_weights}
        if self.supervised():
            self.lease_seconds = lease_seconds or self.default_lease_seconds
            self.lease_expires_at = self.clock() + self.lease_seconds
        else:
            self.lease_seconds = self.lease_expires_at = None

    def supervised(self) -> bool:
        """Whether any traffic goes to a backend other than `stable` (a canary)."""
        return any(w > 0 for n, w in self.weights.items() if n != STABLE)

    def renew(self, lease_seconds: float | None = None) -> None:
        """Extend the canary lease from now; LeaseLost once it lapsed or where none is held."""
        self.expire()
        if self.lease_expires_at is None:
            raise LeaseLost("no canary lease to renew: it lapsed (all traffic went back to "
                            "stable) or no canary has a weight")
        if lease_seconds is not None and not 0 < lease_seconds <= 3600:
            raise ValueError("lease_seconds must be in (0, 3600]")
        self.lease_seconds = lease_seconds or self.lease_seconds
        assert self.lease_seconds is not None
        self.lease_expires_at = self.clock() + self.lease_seconds

    def expire(self) -> bool:
        """Revert to `stable` only if the canary lease lapsed; True when it did just now."""
        if self.lease_expires_at is None or self.clock() < self.lease_expires_at:
            return False
        reverted = {n: w for n, w in self.weights.items() if n != STABLE and w > 0}
        self.weights = {n: (100 if n == STABLE else 0) for n in self.weights}
        if STABLE in self.backends and STABLE not in self.weights:
            self.weights[STABLE] = 100
        # No stable backend: every weight is 0 and requests get 503, never the canary.
        self._current = {n: 0 for n in self.weights}
        self.lapsed.append({"at": time.time(), "reverted_weights": reverted,
                            "lease_seconds": self.lease_seconds})
        self.lease_seconds = self.lease_expires_at = None
        logger.warning("canary lease lapsed with no renewal: weights %s reverted to 0, all "
                       "traffic to %s", reverted, STABLE)
        return True

    def lease_state(self) -> dict[str, Any]:
        left = None if self.lease_expires_at is None else \
            round(max(0.0, self.lease_expires_at - self.clock()), 3)
        return {"held": self.lease_expires_at is not None, "lease_seconds": self.lease_seconds,
                "expires_in_seconds": left, "lapsed": list(self.lapsed[-10:])}

    def pick(self) -> tuple[str, str] | None:
        """Smooth weighted round-robin: deterministic and exact over each cycle."""
        self.expire()
        total = 0
        best: str | None = None
        for name, weight in self.weights.items():
            if weight <= 0:
                continue
            self._current[name] += weight
            total += weight
            if best is None or self._current[name] > self._current[best]:
                best = name
        if best is None:
            return None
        self._current[best] -= total
        return best, self.backends[best]


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("backend",)
        self.requests = Counter("shipyard_router_requests", "Routed requests by backend and "
                                "HTTP status code.", ("backend", "code"), registry=self.registry)
        self.ttft = Histogram("shipyard_router_time_to_first_token_seconds",
                              "Request received to first response body byte (first token "
                              "when streaming), as clients see it.", labels,
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram("shipyard_router_inter_token_latency_seconds",
                             "Gaps between streamed response chunks.", labels,
                             buckets=LATENCY_BUCKETS, registry=self.registry)
        self.e2e = Histogram("shipyard_router_e2e_request_latency_seconds",
                             "Request received to last response byte.", labels,
                             buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("shipyard_router_requests_in_flight", "Requests being proxied.",
                               labels, registry=self.registry)
        self.weight = Gauge("shipyard_router_backend_weight", "Configured weight.", labels,
                            registry=self.registry)
        self.faults = Counter("shipyard_router_injected_faults", "Faults injected.",
                              ("backend", "kind"), registry=self.registry)


class Router:
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

    def build_admin_app(self, guard: AdminGuard) -> web.Application:
        """The admin listener (its own port): every request passes `guard` first."""
        app = web.Application(client_max_size=64 << 10, middlewares=[guard.middleware])
        app.router.add_get("/admin/state", self.state)
        app.router.add_post("/admin/weights", self.set_weights)
        app.router.add_post("/admin/backends", self.set_backends)
        app.router.add_post("/admin/faults", self.set_faults)
        app.router.add_post("/admin/lease", self.renew_lease)
        return app

    async def watch_lease(self, interval_seconds: float = 0.2) -> None:
        """Lapse the canary lease on time even with no traffic (state and gauges follow)."""
        while True:
            await asyncio.sleep(interval_seconds)
            if self.table.expire():
                self._refresh_weight_gauges()

    # -- admin -------------------------------------------------------------------------------
    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metrics_page(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def snapshot(self) -> dict[str, Any]:
        return {
            "backends": dict(self.table.backends),
            "weights": dict(self.table.weights),
            "faults": {n: asdict(f) for n, f in self.table.faults.items()},
            "in_flight": dict(self._in_flight),
            "lease": self.table.lease_state(),
        }

    async def state(self, _: web.Request) -> web.Response:
        if self.table.expire():
            self._refresh_weight_gauges()
        return web.json_response(self.snapshot())

    async def set_weights(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return self._apply(lambda: self.table.set(weights=_int_map(body.get("weights")),
                                                  lease_seconds=_lease(body)))

    async def renew_lease(self, request: web.Request) -> web.Response:
        """The controller's heartbeat: 409 once the lease lapsed (it must not assume its
        canary still has traffic)."""
        body = await _json_body(request)
        try:
            self.table.renew(_lease(body))
        except LeaseLost as exc:
            return web.json_response({"error": {"message": str(exc), "type": "LeaseLost",
                                                "code": 409}, **self.snapshot()}, status=409)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return web.json_response(self.snapshot())

    async def set_backends(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        backends = body.get("backends")
        if not isinstance(backends, dict) or not all(
            isinstance(u, str) and u.startswith("http://") for u in backends.values()
        ):
            return _bad("backends must map names to http:// base URLs")
        refused = self.allow_list.refused(backends.values())
        if refused:
            logger.warning("refused backends %s: not this deployment's engines", refused)
            return web.json_response({"error": {
                "message": f"backends {refused} are not this deployment's engines (loopback "
                           "URLs listed in the router's allow-list file)",
                "type": "ForbiddenError", "code": 403}}, status=403)
        weights = _int_map(body["weights"]) if "weights" in body else None
        return self._apply(lambda: self.table.set(backends=backends, weights=weights,
                                                  lease_seconds=_lease(body)))

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        faults = body.get("faults")
        if not isinstance(faults, dict):
            return _bad("faults must map backend names to fault specs")

        def apply() -> None:
            self.table.faults = {name: FaultSpec(**spec) for name, spec in faults.items()
                                 if spec}

        return self._apply(apply)

    def _apply(self, change: Any) -> web.Response:
        try:
            change()
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        self._refresh_weight_gauges()
        logger.info("routing: %s", self.snapshot())
        return web.json_response(self.snapshot())

    def _refresh_weight_gauges(self) -> None:
        for name in self.table.backends:
            self.metrics.weight.labels(backend=name).set(self.table.weights.get(name, 0))

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


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _lease(body: dict[str, Any]) -> float | None:
    value = body.get("lease_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("lease_seconds must be a number of seconds")
    return float(value)


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value.values()
    ):
        raise ValueError("weights must map backend names to integers")
    return {str(k): int(v) for k, v in value.items()}


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "BadRequestError",
                                        "code": 400}}, status=400)


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


async def _serve(router: Router, host: str, port: int, guard: AdminGuard,
                 admin_port: int, limits: ConnectionLimits = ConnectionLimits()) -> None:
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
