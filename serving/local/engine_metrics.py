"""Prometheus metrics of the local engine, under vLLM's names, labels and buckets.

The canary controller, dashboards and alerts read these names; keeping them identical to
vLLM's (checked by the engine contract tests against a real vLLM) means nothing downstream
knows which engine it is looking at. `http_requests_total` mirrors the counter vLLM's
prometheus-fastapi-instrumentator exports (status grouped as 2xx/4xx/5xx).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Bucket boundaries as in vLLM v1 (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

ENGINE_METRIC_NAMES = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:request_success_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
)


class EngineMetrics:
    """One registry per server process (never the global default: tests start many)."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = ("model_name", "engine")
        self._labels = {"model_name": model_name, "engine": "0"}
        self.running = Gauge("vllm:num_requests_running", "Requests being decoded.",
                             labels, registry=self.registry).labels(**self._labels)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests queued for a slot.",
                             labels, registry=self.registry).labels(**self._labels)
        self._success = Counter("vllm:request_success", "Finished requests.",
                                (*labels, "finished_reason"), registry=self.registry)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed.",
                                     labels, registry=self.registry).labels(**self._labels)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.",
                                         labels, registry=self.registry).labels(**self._labels)
        self.ttft = Histogram("vllm:time_to_first_token_seconds",
                              "Request arrival to first generated token.", labels,
                              buckets=TTFT_BUCKETS, registry=self.registry).labels(**self._labels)
        self.itl = Histogram("vllm:inter_token_latency_seconds",
                             "Time between consecutive generated tokens.", labels,
                             buckets=ITL_BUCKETS, registry=self.registry).labels(**self._labels)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds",
                             "Request arrival to last token.", labels,
                             buckets=E2E_BUCKETS, registry=self.registry).labels(**self._labels)
        self._http = Counter("http_requests", "HTTP requests by handler, method and status.",
                             ("handler", "method", "status"), registry=self.registry)
        # Counters show up at 0 before the first request, as vLLM's do after start-up.
        for reason in ("stop", "length", "abort", "error", "repetition"):
            self._success.labels(**self._labels, finished_reason=reason)

    def request_succeeded(self, finished_reason: str) -> None:
        self._success.labels(**self._labels, finished_reason=finished_reason).inc()

    def http_request(self, handler: str, method: str, status_code: int) -> None:
        self._http.labels(handler=handler, method=method, status=f"{status_code // 100}xx").inc()
