"""PrometheusApiSource against a stand-in for the Prometheus HTTP API on loopback: the PromQL
it sends (per-track selectors on the PodMonitor's labels) and how it reads the vectors back."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from common.errors import StageError
from deploy.metric_sources import PrometheusApiSource

pytestmark = pytest.mark.unit


class _PromHandler(BaseHTTPRequestHandler):
    queries: ClassVar[list[str]] = []
    fail: ClassVar[bool] = False

    def do_GET(self) -> None:
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        query = params["query"][0]
        type(self).queries.append(query)
        canary = 'track="canary"' in query
        payload: dict[str, object]
        if type(self).fail:
            payload = {"status": "error", "error": "bad_data: parse error"}
        elif query.startswith("sum by (le)"):
            counts = (8, 10, 10) if canary else (40, 50, 50)
            payload = _vector([({"le": le}, c) for le, c in zip(("0.1", "0.5", "+Inf"), counts,
                                                               strict=True)])
        elif "status=\"5xx\"" in query and not query.startswith("sum(vllm:request_success"):
            payload = _vector([({}, 2 if canary else 0)])
        else:
            payload = _vector([({}, 10 if canary else 50)])
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _vector(items: list[tuple[dict[str, str], float]]) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1.0, str(value)]} for labels, value in items]}}


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PromHandler)
    _PromHandler.queries, _PromHandler.fail = [], False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_snapshot_reads_counters_and_histograms_per_track(prometheus: str) -> None:
    source = PrometheusApiSource(prometheus, namespace="shipyard", deployment="shipyard")
    snapshot = source.snapshot(["stable", "canary"])
    assert snapshot["canary"].errors == 2 and snapshot["stable"].errors == 0
    assert snapshot["canary"].ttft.count == 10
    assert snapshot["canary"].ttft.buckets[0] == (0.1, 8.0)
    assert snapshot["stable"].ttft.quantile(0.5) == pytest.approx(0.0625)
    assert all('namespace="shipyard"' in q for q in _PromHandler.queries)
    assert any('track="canary"' in q and "vllm:time_to_first_token_seconds_bucket" in q
               for q in _PromHandler.queries)


def test_query_errors_are_deploy_errors(prometheus: str) -> None:
    _PromHandler.fail = True
    source = PrometheusApiSource(prometheus, namespace="shipyard", deployment="shipyard")
    with pytest.raises(StageError) as caught:
        source.snapshot(["canary"])
    assert caught.value.code == "DEPLOY_METRICS_UNAVAILABLE"
