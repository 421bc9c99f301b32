"""Where the canary controller reads its numbers: one `MetricsSource` interface, two sources.

  ScrapeMetricsSource    local: the router's and the engines' `/metrics` (Prometheus text)
  PrometheusApiSource    cluster: instant queries against the Prometheus HTTP API

Both return cumulative counters and histograms per track ("stable", "canary"); the
controller subtracts two snapshots to get a window, exactly like PromQL's `increase()`.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from common.errors import StageError


@dataclass(frozen=True)
class Histogram:
    """Cumulative Prometheus histogram: (upper bound, cumulative count) pairs, ascending."""

    buckets: tuple[tuple[float, float], ...] = ()
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        before = dict(earlier.buckets)
        return Histogram(
            tuple((le, max(c - before.get(le, 0.0), 0.0)) for le, c in self.buckets),
            max(self.sum - earlier.sum, 0.0),
            max(self.count - earlier.count, 0.0),
        )

    def plus(self, other: Histogram) -> Histogram:
        mine = dict(self.buckets)
        bounds = sorted(set(mine) | {le for le, _ in other.buckets})
        theirs = dict(other.buckets)
        return Histogram(tuple((le, mine.get(le, 0.0) + theirs.get(le, 0.0)) for le in bounds),
                         self.sum + other.sum, self.count + other.count)

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower_bound  # above the largest finite bucket: its bound
                width = cumulative - lower_count
                fraction = (rank - lower_count) / width if width > 0 else 1.0
                return lower_bound + (le - lower_bound) * fraction
            lower_bound, lower_count = le, cumulative
        return lower_bound

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


@dataclass(frozen=True)
class TrackSnapshot:
    """Cumulative numbers of one track as clients see them, plus engine-side extras."""

    requests: float = 0.0
    errors: float = 0.0  # 5xx answers (injected ones included)
    # 4xx answers: the client's fault when both tracks give them; a canary that refuses
    # what the stable serves (a changed template, a smaller context) is broken.
    client_errors: float = 0.0
    ttft: Histogram = field(default_factory=Histogram)
    itl: Histogram = field(default_factory=Histogram)
    e2e: Histogram = field(default_factory=Histogram)
    # engine-side values for the record (vllm:num_requests_running, ...), not for decisions
    engine: Mapping[str, float] = field(default_factory=dict)

    def minus(self, earlier: TrackSnapshot) -> TrackSnapshot:
        return TrackSnapshot(
            requests=max(self.requests - earlier.requests, 0.0),
            errors=max(self.errors - earlier.errors, 0.0),
            client_errors=max(self.client_errors - earlier.client_errors, 0.0),
            ttft=self.ttft.minus(earlier.ttft),
            itl=self.itl.minus(earlier.itl),
            e2e=self.e2e.minus(earlier.e2e),
            engine=dict(self.engine),
        )

    def plus(self, other: TrackSnapshot) -> TrackSnapshot:
        return TrackSnapshot(self.requests + other.requests, self.errors + other.errors,
                             self.client_errors + other.client_errors,
                             self.ttft.plus(other.ttft), self.itl.plus(other.itl),
                             self.e2e.plus(other.e2e), dict(other.engine or self.engine))


class MetricsSource(Protocol):
    def snapshot(self, tracks: Sequence[str]) -> dict[str, TrackSnapshot]:
        """Cumulative numbers for each track, read now."""
        ...


# -- local: scrape /metrics ----------------------------------------------------------------------
ROUTER_PREFIX = "shipyard_router_"
ENGINE_RECORDED = ("vllm:num_requests_running", "vllm:num_requests_waiting",
                   "vllm:request_success_total", "vllm:prompt_tokens_total",
                   "vllm:generation_tokens_total")


class ScrapeMetricsSource:
    """Client-side latency and status per track from the router (which sees injected faults
    the engines cannot), engine-side counters and gauges from each engine's /metrics."""

    def __init__(self, router_url: str, engine_urls: Mapping[str, str] | None = None,
                 timeout_seconds: float = 5.0) -> None:
        self.router_url = router_url.rstrip("/")
        self.engine_urls = dict(engine_urls or {})
        self.timeout_seconds = timeout_seconds

    def snapshot(self, tracks: Sequence[str]) -> dict[str, TrackSnapshot]:
        router = parse_prometheus_text(_get(f"{self.router_url}/metrics", self.timeout_seconds))
        out = {}
        for track in tracks:
            engine: dict[str, float] = {}
            if track in self.engine_urls:
                try:
                    samples = parse_prometheus_text(
                        _get(f"{self.engine_urls[track].rstrip('/')}/metrics",
                             self.timeout_seconds))
                    engine = {name: _total(samples, name, {}) for name in ENGINE_RECORDED}
                except StageError:
                    engine = {}  # an engine being torn down: its extras are optional
            out[track] = TrackSnapshot(
                requests=_total(router, f"{ROUTER_PREFIX}requests_total", {"backend": track}),
                errors=_by_status_class(router, track, "5"),
                client_errors=_by_status_class(router, track, "4"),
                ttft=_histogram(router, f"{ROUTER_PREFIX}time_to_first_token_seconds",
                                {"backend": track}),
                itl=_histogram(router, f"{ROUTER_PREFIX}inter_token_latency_seconds",
                               {"backend": track}),
                e2e=_histogram(router, f"{ROUTER_PREFIX}e2e_request_latency_seconds",
                               {"backend": track}),
                engine=engine,
            )
        return out


Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_prometheus_text(text: str) -> Samples:
    """Sample name -> [(labels, value)], for every sample of every family."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _total(samples: Samples, name: str, selector: Mapping[str, str]) -> float:
    return sum(v for labels, v in samples.get(name, []) if _matches(labels, selector))


def _histogram(samples: Samples, name: str, selector: Mapping[str, str]) -> Histogram:
    buckets: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        if _matches(labels, selector):
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    return Histogram(tuple(sorted(buckets.items())), _total(samples, f"{name}_sum", selector),
                     _total(samples, f"{name}_count", selector))


def _get(url: str, timeout_seconds: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            return str(response.read().decode())
    except OSError as exc:
        raise StageError("DEPLOY_METRICS_UNAVAILABLE", f"cannot read {url}: {exc}") from exc


def _by_status_class(router: Samples, track: str, first_digit: str) -> float:
    return float(sum(v for labels, v in router.get(f"{ROUTER_PREFIX}requests_total", [])
                     if labels.get("backend") == track
                     and labels.get("code", "").startswith(first_digit)))


# -- cluster: Prometheus HTTP API --------------------------------------------------------------
@dataclass(frozen=True)
class PromQueries:
    """PromQL per number; `{selector}` becomes the track's label selector. The defaults read
    vLLM's own metrics scraped by the PodMonitor in infra/k8s (pods labelled `track`)."""

    requests: str = 'sum(vllm:request_success_total{{{selector}}}) + ' \
                    'sum(http_requests_total{{{selector},status=~"4xx|5xx"}} or vector(0))'
    errors: str = 'sum(http_requests_total{{{selector},status="5xx"}} or vector(0))'
    client_errors: str = 'sum(http_requests_total{{{selector},status="4xx"}} or vector(0))'
    ttft: str = "vllm:time_to_first_token_seconds"
    itl: str = "vllm:inter_token_latency_seconds"
    e2e: str = "vllm:e2e_request_latency_seconds"


class PrometheusApiSource:
    def __init__(self, base_url: str, *, namespace: str, deployment: str,
                 queries: PromQueries | None = None, timeout_seconds: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self.deployment = deployment
        self.queries = queries or PromQueries()
        self.timeout_seconds = timeout_seconds

    def selector(self, track: str) -> str:
        return (f'namespace="{self.namespace}",app_kubernetes_io_instance="{self.deployment}",'
                f'track="{track}"')

    def snapshot(self, tracks: Sequence[str]) -> dict[str, TrackSnapshot]:
        at = time.time()
        out = {}
        for track in tracks:
            sel = self.selector(track)
            out[track] = TrackSnapshot(
                requests=self._scalar(self.queries.requests.format(selector=sel), at),
                errors=self._scalar(self.queries.errors.format(selector=sel), at),
                client_errors=self._scalar(self.queries.client_errors.format(selector=sel), at),
                ttft=self._histogram(self.queries.ttft, sel, at),
                itl=self._histogram(self.queries.itl, sel, at),
                e2e=self._histogram(self.queries.e2e, sel, at),
            )
        return out

    def _histogram(self, metric: str, selector: str, at: float) -> Histogram:
        buckets = self._vector(f"sum by (le) ({metric}_bucket{{{selector}}})", at)
        pairs = sorted((float(labels["le"]), value) for labels, value in buckets)
        return Histogram(tuple(pairs), self._scalar(f"sum({metric}_sum{{{selector}}})", at),
                         self._scalar(f"sum({metric}_count{{{selector}}})", at))

    def _scalar(self, query: str, at: float) -> float:
        return sum(value for _, value in self._vector(query, at))

    def _vector(self, query: str, at: float) -> list[tuple[dict[str, str], float]]:
        url = (f"{self.base_url}/api/v1/query?"
               + urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"}))
        payload = json.loads(_get(url, self.timeout_seconds))
        if payload.get("status") != "success":
            raise StageError("DEPLOY_METRICS_UNAVAILABLE",
                             f"Prometheus query failed: {query}: {payload.get('error')}")
        data = payload["data"]
        if data.get("resultType") != "vector":
            raise StageError("DEPLOY_METRICS_UNAVAILABLE",
                             f"expected an instant vector from {query}, got {data}")
        return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]


def merge(snapshots: Iterable[TrackSnapshot]) -> TrackSnapshot:
    total = TrackSnapshot()
    for snap in snapshots:
        total = total.plus(snap)
    return total
