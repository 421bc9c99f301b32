"""Canary end to end on real vLLM processes (the community CPU build, loopback only).

One deployment per module: its first deployment (the stable vLLM engine, about a minute to
start) is shared by the tests below, each of which canaries a new version against it. The
promotion test runs last because it replaces the stable. Bakes are short with a request floor
(see tests/deploy/scenarios.py), so each test is dominated by the canary engine's start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from common.settings import Settings
from deploy.model_ref import ModelToDeploy
from deploy.stage import DeployOutcome
from deploy.state import load_state
from tests.deploy.conftest import (
    SHARED_SERVER_PIDS,
    Registry,
    assert_servers_gone,
    make_registry,
)
from tests.deploy.scenarios import (
    INJECTED_LATENCY_SECONDS,
    assert_record,
    assert_serving,
    champion,
    deploy,
    fast_config,
    stop_everything,
)

pytestmark = pytest.mark.e2e
MODEL = "shipyard-deploy-vllm"


@dataclass
class Deployment:
    registry: Registry
    first: DeployOutcome
    stable: ModelToDeploy

    @property
    def settings(self) -> Settings:
        return self.registry.settings


def _server_pids(settings: Settings) -> tuple[set[int], set[int]]:
    state = load_state(settings.home, "shipyard-test")
    pids, ports = set(), set()
    for record in state.servers():
        ports.add(record.port)
        pids.add(record.pid)
        pids.update(c.pid for c in psutil.Process(record.pid).children(recursive=True))
    return pids, ports


@pytest.fixture(scope="module")
def deployment(vllm_python: Path, model_dirs: dict[str, Path],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    registry = make_registry(tmp_path_factory.mktemp("vllm-deploy") / ".shipyard")
    stable = registry.register(model_dirs["stable"], MODEL)
    first = deploy(stable, fast_config("vllm"), registry.settings)
    pids, ports = _server_pids(registry.settings)
    SHARED_SERVER_PIDS.update(pids)
    try:
        yield Deployment(registry, first, stable)
    finally:
        all_pids, all_ports = _server_pids(registry.settings)
        stop_everything(registry.settings, "shipyard-test")
        SHARED_SERVER_PIDS.difference_update(pids | all_pids)
        assert_servers_gone(pids | all_pids, ports | all_ports)


@pytest.fixture
def canary_servers_checked(deployment: Deployment) -> Iterator[None]:
    """The stable is shared; anything else a test starts must be gone after it."""
    yield
    state = load_state(deployment.settings.home, "shipyard-test")
    assert state.canary is None and state.router is not None and state.stable is not None


def _refresh_shared(deployment: Deployment) -> None:
    pids, _ = _server_pids(deployment.settings)
    SHARED_SERVER_PIDS.update(pids)


def test_first_deployment_serves_on_vllm(deployment: Deployment) -> None:
    first = deployment.first
    assert (first.outcome, first.action, first.engine) == ("PASS", "first_deployment", "vllm")
    assert champion(deployment.settings, MODEL) == deployment.stable.version
    assert_serving(first, deployment.settings, deployment.stable.version)


def test_canary_with_injected_latency_is_rolled_back(
        deployment: Deployment, model_dirs: dict[str, Path], canary_servers_checked: None
) -> None:
    slow = deployment.registry.register(model_dirs["slow"], MODEL)
    config = fast_config("vllm", inject_canary_latency_seconds=INJECTED_LATENCY_SECONDS)
    outcome = deploy(slow, config, deployment.settings)
    assert (outcome.outcome, outcome.action) == ("FAIL", "rolled_back")
    assert champion(deployment.settings, MODEL) == deployment.stable.version
    assert_serving(outcome, deployment.settings, deployment.stable.version)
    record = assert_record(outcome, deployment.settings)
    failed = {c["name"] for c in record["steps"][-1]["checks"]
              if c["status"] == "FAIL"}
    assert "ttft_p95" in failed


def test_canary_with_injected_5xx_is_rolled_back(
        deployment: Deployment, model_dirs: dict[str, Path], canary_servers_checked: None
) -> None:
    broken = deployment.registry.register(model_dirs["broken"], MODEL)
    outcome = deploy(broken, fast_config("vllm", inject_canary_error_rate=0.5),
                     deployment.settings)
    assert (outcome.outcome, outcome.action) == ("FAIL", "rolled_back")
    assert champion(deployment.settings, MODEL) == deployment.stable.version
    assert_serving(outcome, deployment.settings, deployment.stable.version)
    record = assert_record(outcome, deployment.settings)
    failed = {c["name"] for c in record["steps"][-1]["checks"]
              if c["status"] == "FAIL"}
    assert "error_rate" in failed


def test_healthy_canary_is_promoted_and_the_alias_moves(
        deployment: Deployment, model_dirs: dict[str, Path]) -> None:
    healthy = deployment.registry.register(model_dirs["canary"], MODEL)
    outcome = deploy(healthy, fast_config("vllm"), deployment.settings)
    assert (outcome.outcome, outcome.action, outcome.engine) == ("PASS", "promoted", "vllm")
    assert champion(deployment.settings, MODEL) == healthy.version
    assert_serving(outcome, deployment.settings, healthy.version)
    record = assert_record(outcome, deployment.settings)
    assert [s["canary_percent"] for s in record["steps"]] == [10, 50, 100]
    assert record["load"]["lost"] == 0
    # real vLLM sends the usage chunk the load generator asks for: the tokens that serving's
    # $ per 1M generated tokens is computed from are vLLM's own count
    assert record["load"]["token_counts"] == {"usage": record["load"]["ok"]}
    assert record["load"]["generated_tokens_per_second"] > 0
    # the old stable is gone; the new one is now the shared server the module stops
    _refresh_shared(deployment)
