"""The weighted router on real processes: exact traffic split, weight changes under load that
lose no request, fault injection per backend visible in its per-backend metrics."""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
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
from serving.router_admin import AdminClient, write_admin_token, write_allowed_backends
from serving.vllm_engine import local_environment
from tests.deploy.conftest import SHARED_SERVER_PIDS, assert_servers_gone
from tests.deploy.http import Reply, request

pytestmark = pytest.mark.integration
NAME = "tiny-router"


@dataclass
class Setup:
    stable: EngineProcess
    canary: EngineProcess
    router_url: str
    admin_url: str
    token: str
    allowed_backends_file: Path

    def admin(self, path: str, body: dict[str, object]) -> dict[str, object]:
        return AdminClient(self.admin_url, self.token).post(path, body)

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
        port, admin_port = free_port(), free_port()
        token = write_admin_token(tmp_path / "admin.token")
        allowed = tmp_path / "backends.json"
        write_allowed_backends(allowed, [stable.base_url, canary.base_url])
        process = spawn(
            [sys.executable, "-m", "serving.router", "--port", str(port),
             "--backend", f"stable={stable.base_url}", "--weight", "stable=100",
             "--admin-port", str(admin_port), "--admin-token-file", str(tmp_path / "admin.token"),
             "--allowed-backends-file", str(allowed)],
            env=local_environment(os.environ, PROJECT_ROOT), log_path=tmp_path / "router.log")
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}/health", process, pid=process.pid,
                               timeout_seconds=30, log_path=tmp_path / "router.log",
                               what="router")
            pids = {stable.pid, canary.pid, process.pid}
            SHARED_SERVER_PIDS.update(pids)
            yield Setup(stable, canary, f"http://127.0.0.1:{port}",
                        f"http://127.0.0.1:{admin_port}", token, allowed)
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
    # Paced by requests sent, not by wall-clock sleeps: on a loaded machine each weight
    # still sees traffic in flight when it changes, however slowly requests go out.
    spec = LoadSpec(requests_per_second=25, concurrency=6, max_requests=150, max_seconds=300,
                    max_tokens=24)
    backends = {"stable": setup.stable.base_url, "canary": setup.canary.base_url}

    def after_more_requests(load: LoadGenerator, count: int) -> None:
        target = load.result.sent + count
        deadline = time.monotonic() + 120
        while load.result.sent < target:
            assert time.monotonic() < deadline, f"load stalled at {load.result.sent} requests"
            time.sleep(0.05)

    with LoadGenerator(setup.router_url, NAME, load_eval_prompts(limit=50), spec) as load:
        for canary in (10, 50, 100, 0, 50):
            after_more_requests(load, 10)
            setup.admin("backends", {"backends": backends,
                                     "weights": {"stable": 100 - canary, "canary": canary}})
        after_more_requests(load, 6)
        # swap the canary out of the table entirely while requests to it are in flight
        setup.admin("backends", {"backends": {"stable": setup.stable.base_url},
                                 "weights": {"stable": 100}})
        after_more_requests(load, 6)
    result = load.result
    assert result.sent >= 62
    assert result.lost == 0, result.first_errors
    assert result.ok == result.sent, result.to_dict()
    assert set(result.by_backend) == {"stable", "canary"}
    # generated tokens, counted from the usage chunk each engine sends through the router
    assert result.token_counts == {"usage": result.ok}
    assert 0 < result.generated_tokens <= spec.max_tokens * result.ok
    summary = result.to_dict()
    assert summary["generated_tokens_per_second"] == pytest.approx(
        result.generated_tokens / result.wall_seconds)


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
        reply = admin_request(setup, path, body)
        assert reply.status == 400, (path, body, reply.body)
    assert setup.chat() == "stable"  # a refused change leaves routing as it was


def admin_request(setup: Setup, path: str, body: object = None, *,
                  headers: dict[str, str] | None = None, url: str | None = None) -> Reply:
    base = {"Authorization": f"Bearer {setup.token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url or setup.admin_url}/admin/{path}", data=data,
                                 headers={**base, **(headers or {})},
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return Reply(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), dict(exc.headers))


def test_admin_api_is_not_on_the_serving_port(setup: Setup) -> None:
    reply = admin_request(setup, "weights", {"weights": {"stable": 100}}, url=setup.router_url)
    assert reply.status == 404


def test_admin_api_refuses_unauthenticated_and_rebound_requests(setup: Setup) -> None:
    change = {"backends": {"stable": setup.canary.base_url}, "weights": {"stable": 100}}
    refusals = {
        "no token": ({"Authorization": ""}, 401),
        "wrong token": ({"Authorization": "Bearer " + "x" * 43}, 401),
        "DNS rebinding (foreign Host)": ({"Host": "attacker.example:80"}, 421),
        "form post (not JSON)": ({"Content-Type": "text/plain"}, 415),
    }
    for what, (headers, status) in refusals.items():
        reply = admin_request(setup, "backends", change, headers=headers)
        assert reply.status == status, (what, reply.status, reply.body)
    assert admin_request(setup, "state", headers={"Authorization": ""}).status == 401
    assert setup.chat() == "stable" and setup.admin_url  # routing untouched


def test_admin_api_refuses_backends_that_are_not_the_deployments_engines(setup: Setup) -> None:
    for url in ("http://127.0.0.1:9", "http://10.0.0.1:8000", "http://example.com:80"):
        reply = admin_request(setup, "backends", {"backends": {"stable": url},
                                                  "weights": {"stable": 100}})
        assert reply.status == 403, (url, reply.body)
    assert setup.chat() == "stable"
    # an engine the deployment lists is accepted as soon as it is listed
    write_allowed_backends(setup.allowed_backends_file, [setup.stable.base_url])
    reply = admin_request(setup, "backends", {"backends": {"stable": setup.stable.base_url,
                                                           "canary": setup.canary.base_url},
                                              "weights": {"stable": 50, "canary": 50}})
    assert reply.status == 403
    write_allowed_backends(setup.allowed_backends_file,
                           [setup.stable.base_url, setup.canary.base_url])


def test_models_list_hides_local_paths(setup: Setup, model_dirs: dict[str, Path]) -> None:
    listing = request(f"{setup.router_url}/v1/models").json()
    assert [card["id"] for card in listing["data"]] == [NAME]
    assert str(model_dirs["stable"]) not in json.dumps(listing)
    assert all("/" not in str(card.get("root", "")) for card in listing["data"])


def test_body_limit_holds_for_chunked_uploads(setup: Setup) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "' + NAME.encode() + b'", "prompt": "'
        for _ in range(40):
            yield b"x" * (64 << 10)  # 2.5 MiB in total, above the 2 MiB limit
        yield b'", "max_tokens": 1}'

    conn = http.client.HTTPConnection("127.0.0.1", int(setup.router_url.rsplit(":", 1)[1]),
                                      timeout=30)
    conn.request("POST", "/v1/completions", body=chunks(),
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                 encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()


def test_load_generator_targets_loopback_only() -> None:
    spec = LoadSpec(1, 1, 1, 1)
    for url in ("http://10.0.0.1:8000", "http://example.com"):
        with pytest.raises(ValueError, match="loopback"):
            LoadGenerator(url, NAME, ["hi"], spec)


@pytest.mark.parametrize("path", ["/v1/../metrics", "/v1/%2e%2e/metrics", "/v1/%2E%2E/health",
                                  "/v1/./../metrics", "/tokenize/../metrics"])
def test_dot_segments_cannot_leave_the_routed_paths(setup: Setup, path: str) -> None:
    # the router forwards the raw path; an engine that normalizes it would serve whatever
    # `..` reaches, outside the allow-list of routed paths
    port = int(setup.router_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 404, (path, body[:200])
    assert b"no route" in body
    assert BACKEND_HEADER not in response.headers  # never forwarded to an engine


def test_routed_path_rule() -> None:
    from serving.router import is_routed_path

    assert is_routed_path("/v1/chat/completions") and is_routed_path("/tokenize")
    assert not is_routed_path("/metrics") and not is_routed_path("/v1/..%2fadmin/..")
