"""The weighted router on real processes: exact traffic split, weight changes under load that
lose no request, fault injection per backend visible in its per-backend metrics."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT
from deploy.loadgen import LoadGenerator, LoadSpec, load_eval_prompts
from deploy.metric_sources import ScrapeMetricsSource
from serving.engine import EngineProcess, start_engine
from serving.process import (
    free_port,
    spawn,
    stop_process_group,
    wait_until_healthy,
)
from serving.router import BACKEND_HEADER
from serving.vllm_engine import local_environment
from tests.deploy.conftest import SHARED_SERVER_PIDS, assert_servers_gone
from tests.deploy.http import request

pytestmark = pytest.mark.integration
NAME = "tiny-router"


@dataclass
class Setup:
    stable: EngineProcess
    canary: EngineProcess
    router_url: str

    def admin(self, path: str, body: dict[str, object]) -> dict[str, object]:
        reply = request(f"{self.router_url}/admin/{path}", body)
        assert reply.status == 200, reply.body
        return reply.json()

    def chat(self) -> str:
        reply = request(f"{self.router_url}/v1/chat/completions",
                        {"model": NAME, "max_tokens": 2, "temperature": 0,
                         "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
        assert reply.status == 200, reply.body
        return reply.headers[BACKEND_HEADER]


@pytest.fixture(scope="module")
def servers(model_dirs: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Two local engines and a router, shared by the module (each test resets the routing)."""
    tmp_path = tmp_path_factory.mktemp("router")
    with start_engine("local", model_dirs["stable"], NAME, log_dir=tmp_path) as stable, \
            start_engine("local", model_dirs["canary"], NAME, log_dir=tmp_path) as canary:
        port = free_port()
        process = spawn(
            [sys.executable, "-m", "serving.router", "--port", str(port),
             "--backend", f"stable={stable.base_url}", "--weight", "stable=100"],
            env=local_environment(os.environ, PROJECT_ROOT), log_path=tmp_path / "router.log")
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}/health", process, pid=process.pid,
                               timeout_seconds=30, log_path=tmp_path / "router.log",
                               what="router")
            pids = {stable.pid, canary.pid, process.pid}
            SHARED_SERVER_PIDS.update(pids)
            yield Setup(stable, canary, f"http://127.0.0.1:{port}")
        finally:
            stop_process_group(process.pid, process, grace_seconds=10)
    SHARED_SERVER_PIDS.difference_update(pids)
    assert_servers_gone(pids, {stable.port, canary.port, port})


@pytest.fixture
def setup(servers: Setup) -> Setup:
    servers.admin("backends", {"backends": {"stable": servers.stable.base_url},
                               "weights": {"stable": 100}})
    servers.admin("faults", {"faults": {}})
    return servers


def test_split_is_exact_per_cycle(setup: Setup) -> None:
    setup.admin("backends", {"backends": {"stable": setup.stable.base_url,
                                          "canary": setup.canary.base_url},
                             "weights": {"stable": 80, "canary": 20}})
    seen = Counter(setup.chat() for _ in range(20))
    assert seen == {"stable": 16, "canary": 4}


def test_weight_changes_under_load_lose_no_request(setup: Setup) -> None:
    spec = LoadSpec(requests_per_second=25, concurrency=6, max_requests=150, max_seconds=30,
                    max_tokens=24)
    backends = {"stable": setup.stable.base_url, "canary": setup.canary.base_url}
    with LoadGenerator(setup.router_url, NAME, load_eval_prompts(limit=50), spec) as load:
        for canary in (10, 50, 100, 0, 50):
            time.sleep(0.8)
            setup.admin("backends", {"backends": backends,
                                     "weights": {"stable": 100 - canary, "canary": canary}})
        time.sleep(0.5)
        # swap the canary out of the table entirely while requests to it are in flight
        setup.admin("backends", {"backends": {"stable": setup.stable.base_url},
                                 "weights": {"stable": 100}})
    result = load.result
    assert result.sent >= 50
    assert result.lost == 0, result.first_errors
    assert result.ok == result.sent, result.to_dict()
    assert set(result.by_backend) == {"stable", "canary"}


def test_injected_latency_and_errors_show_in_per_backend_metrics(setup: Setup) -> None:
    setup.admin("backends", {"backends": {"stable": setup.stable.base_url,
                                          "canary": setup.canary.base_url},
                             "weights": {"stable": 50, "canary": 50}})
    setup.admin("faults", {"faults": {"canary": {"added_latency_seconds": 0.3,
                                                 "error_rate": 0.5}}})
    source = ScrapeMetricsSource(setup.router_url, {"stable": setup.stable.base_url,
                                                    "canary": setup.canary.base_url})
    before = source.snapshot(["stable", "canary"])
    statuses: Counter[int] = Counter()
    for _ in range(20):
        reply = request(f"{setup.router_url}/v1/completions",
                        {"model": NAME, "prompt": "What is 1 + 1?", "max_tokens": 2})
        statuses[(reply.status, reply.headers[BACKEND_HEADER])] += 1  # type: ignore[index]
    after = source.snapshot(["stable", "canary"])
    stable = after["stable"].minus(before["stable"])
    canary = after["canary"].minus(before["canary"])
    assert stable.requests == canary.requests == 10
    assert stable.errors == 0 and 0 < canary.errors < 10
    canary_median, stable_median = canary.ttft.quantile(0.5), stable.ttft.quantile(0.5)
    assert canary_median is not None and stable_median is not None
    assert canary_median >= 0.3 > stable_median
    assert after["canary"].engine["vllm:request_success_total"] > 0
    # clearing the faults restores the canary
    setup.admin("faults", {"faults": {}})
    assert all(request(f"{setup.router_url}/v1/models").status == 200 for _ in range(4))


def test_router_refuses_bad_admin_requests(setup: Setup) -> None:
    for path, body in (("weights", {"weights": {"nope": 10}}),
                       ("weights", {"weights": {"stable": 0}}),
                       ("backends", {"backends": {"x": "ftp://h"}}),
                       ("faults", {"faults": {"stable": {"error_rate": 2}}})):
        reply = request(f"{setup.router_url}/admin/{path}", body)
        assert reply.status == 400, (path, body, reply.body)
    assert setup.chat() == "stable"  # a refused change leaves routing as it was


def test_load_generator_targets_loopback_only() -> None:
    spec = LoadSpec(1, 1, 1, 1)
    for url in ("http://10.0.0.1:8000", "http://example.com"):
        with pytest.raises(ValueError, match="loopback"):
            LoadGenerator(url, NAME, ["hi"], spec)
