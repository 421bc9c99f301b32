"""The router's Prometheus metrics: what clients saw, per backend (status codes, time to first
byte, gaps between streamed chunks, end-to-end), in-flight requests, weights, injected faults."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Finer than vLLM's buckets at the low end: the router must resolve a tiny model's latencies.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
                   0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0)


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

