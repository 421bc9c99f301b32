"""The router's control plane: the `/admin/*` handlers that read and change the routing table
(weights, backends, faults, the canary lease), and the watch that lapses the lease on time.

`RouterControl` is the admin half of `serving.router.Router` (which adds the proxy); it owns
no state of its own. Who may call these handlers (token, loopback Host, JSON) is
serving/router_admin.py's `AdminGuard`, run as the admin app's middleware.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from aiohttp import web

from serving.router_admin import AdminGuard, BackendAllowList
from serving.router_metrics import RouterMetrics
from serving.router_table import FaultSpec, LeaseLost, RoutingTable

logger = logging.getLogger(__name__)


class RouterControl:
    """The admin listener's handlers, mixed into `Router`, whose state they use."""

    table: RoutingTable
    allow_list: BackendAllowList
    metrics: RouterMetrics
    _in_flight: dict[str, int]

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
