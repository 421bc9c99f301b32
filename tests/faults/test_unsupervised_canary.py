"""No unsupervised canary: the router's canary weight is leased. A controller that dies
(SIGKILL: no cleanup runs) or stops renewing leaves its canary at most one lease long; then the
router itself sends all traffic back to the stable and refuses a late renewal. A pause has a
deadline too. The router runs as a real process; the "controller" is a child process that
renews the lease until it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.errors import StageError
from common.settings import PROJECT_ROOT
from deploy.config import DeployConfig
from deploy.controller import CanaryController
from deploy.local_backend import LocalBackend
from deploy.metric_sources import Histogram, TrackSnapshot
from deploy.state import ServerRecord
from serving.process import free_port, spawn, stop_process_group, wait_until_healthy
from serving.router import LeaseLost, RoutingTable
from serving.router_admin import AdminClient, write_admin_token
from serving.vllm_engine import local_environment
from testing.clock import FakeClock

pytestmark = [pytest.mark.faults]

# Nothing listens on these: the lease is about the routing table, not the engines.
BACKENDS = {"stable": "http://127.0.0.1:9/", "canary": "http://127.0.0.1:10/"}


@dataclass
class Router:
    admin: AdminClient
    token: str
    admin_url: str
    backend: LocalBackend  # the deployment's side, renewing as the controller does

    def weights(self) -> dict[str, int]:
        return dict(self.admin.get("state")["weights"])


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    port, admin_port = free_port(), free_port()
    backend = LocalBackend(tmp_path / "home", "lease", engine_kind="local",
                           canary_lease_seconds=1.5)
    token = write_admin_token(backend.admin_token_path)
    process = spawn([sys.executable, "-m", "serving.router", "--port", str(port),
                     "--backend", f"stable={BACKENDS['stable']}", "--weight", "stable=100",
                     "--admin-port", str(admin_port),
                     "--admin-token-file", str(backend.admin_token_path)],
                    env=local_environment(os.environ, PROJECT_ROOT),
                    log_path=tmp_path / "router.log", cwd=PROJECT_ROOT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", process, pid=process.pid,
                           timeout_seconds=30, log_path=tmp_path / "router.log", what="router")
        admin_url = f"http://127.0.0.1:{admin_port}"
        backend.state.router = ServerRecord(role="router", kind="router", pid=process.pid,
                                            port=port, log_path="", admin_port=admin_port)
        yield Router(AdminClient(admin_url, token), token, admin_url, backend)
    finally:
        stop_process_group(process.pid, process, grace_seconds=5)


_RENEWER = """
import sys, time
from serving.router_admin import AdminClient
admin = AdminClient(sys.argv[1], sys.argv[2])
while True:
    admin.post("lease", {"lease_seconds": 1.5})
    time.sleep(0.3)
"""


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.integration
def test_a_killed_controller_leaves_the_canary_one_lease_at_most(router: Router) -> None:
    router.admin.post("backends", {"backends": BACKENDS,
                                   "weights": {"stable": 50, "canary": 50},
                                   "lease_seconds": 1.5})
    controller = subprocess.Popen(
        [sys.executable, "-c", _RENEWER, router.admin_url, router.token], cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        time.sleep(4.0)  # well past one lease: renewal keeps the canary's share
        assert controller.poll() is None
        assert router.weights() == {"stable": 50, "canary": 50}
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=10)
    finally:
        controller.kill()
        controller.wait(timeout=10)
    assert _wait_for(lambda: router.weights().get("canary") == 0, 10), router.weights()
    state = router.admin.get("state")
    assert state["weights"] == {"stable": 100, "canary": 0}
    assert not state["lease"]["held"]
    assert state["lease"]["lapsed"][-1]["reverted_weights"] == {"canary": 50}
    with pytest.raises(StageError) as late:  # too late: the controller must know
        router.backend.renew_canary_lease()
    assert late.value.code == "DEPLOY_CANARY_LEASE_LOST"
    assert "lapsed" in late.value.message


@pytest.mark.integration
def test_a_canary_weight_set_without_a_lease_gets_the_default_one(router: Router) -> None:
    state = router.admin.post("backends", {"backends": BACKENDS,
                                           "weights": {"stable": 0, "canary": 100}})
    assert state["lease"]["held"] and state["lease"]["lease_seconds"] == 60.0
    state = router.admin.post("backends", {"backends": {"stable": BACKENDS["stable"]},
                                           "weights": {"stable": 100}})
    assert not state["lease"]["held"]  # nothing to supervise: the stable needs no lease


@pytest.mark.unit
def test_the_routing_table_reverts_to_stable_when_the_lease_lapses() -> None:
    clock = FakeClock()
    table = RoutingTable(clock=clock)
    table.set(backends=BACKENDS, weights={"stable": 0, "canary": 100}, lease_seconds=5)
    clock.sleep(4)
    table.renew()
    clock.sleep(4)  # 8 s after the set, 4 s after the renewal: still held
    assert table.pick() == ("canary", BACKENDS["canary"])
    clock.sleep(1.5)
    assert table.pick() == ("stable", BACKENDS["stable"])
    assert table.weights == {"stable": 100, "canary": 0}
    with pytest.raises(LeaseLost):
        table.renew()


# -- the controller's side ------------------------------------------------------------------
def _snapshot(requests: int) -> TrackSnapshot:
    bounds = (0.05, 0.1, float("inf"))
    hist = Histogram(tuple((b, float(requests)) for b in bounds), 0.02 * requests,
                     float(requests))
    return TrackSnapshot(requests=requests, ttft=hist, itl=hist, e2e=hist)


class SteadySource:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def snapshot(self, tracks: Sequence[str]) -> dict[str, TrackSnapshot]:
        return {track: _snapshot(int(10 * self.clock.now)) for track in tracks}


class LeasedRouter:
    """The local backend's traffic interface over a real RoutingTable on the fake clock."""

    def __init__(self, clock: FakeClock, lease_seconds: float) -> None:
        self.table = RoutingTable(clock=clock)
        self.table.set(backends=BACKENDS, weights={"stable": 100})
        self.lease_seconds = lease_seconds
        self.renewals = 0

    def set_canary_weight(self, percent: int) -> None:
        weights = {"stable": 100 - percent, "canary": percent}
        self.table.set(weights=weights, lease_seconds=self.lease_seconds)

    def renew_canary_lease(self) -> None:
        try:
            self.table.renew(self.lease_seconds)
        except LeaseLost as exc:
            raise StageError("DEPLOY_CANARY_LEASE_LOST", str(exc)) from exc
        self.renewals += 1


@pytest.mark.unit
def test_the_controller_renews_the_lease_through_a_bake_longer_than_it() -> None:
    clock = FakeClock()
    config = DeployConfig(steps=[50, 100], bake_seconds=20, min_requests=5,
                          scrape_interval_seconds=1.0, max_extra_bake_seconds=5)
    traffic = LeasedRouter(clock, config.canary_lease())
    report = CanaryController(traffic, SteadySource(clock), config, clock=clock,
                              sleep=clock.sleep).run()
    assert config.canary_lease() == 10.0 and clock.now >= 4 * config.canary_lease()
    assert report.outcome == "PASS" and traffic.renewals >= 40
    assert traffic.table.weights == {"stable": 0, "canary": 100}  # never lapsed


@pytest.mark.unit
def test_a_stalled_controller_finds_its_lease_lost_and_ends_the_step_inconclusive() -> None:
    clock = FakeClock()
    config = DeployConfig(steps=[100], bake_seconds=20, min_requests=5,
                          scrape_interval_seconds=1.0, canary_lease_seconds=2.0)
    traffic = LeasedRouter(clock, config.canary_lease())

    def stalling_sleep(seconds: float) -> None:  # one scrape hangs for 30 s
        clock.sleep(30.0 if clock.now < 1 else seconds)

    report = CanaryController(traffic, SteadySource(clock), config, clock=clock,
                              sleep=stalling_sleep).run()
    assert report.outcome == "INCONCLUSIVE"
    assert "DEPLOY_CANARY_LEASE_LOST" in report.steps[0].analysis.reasons[0]
    assert traffic.table.weights["canary"] == 0  # the router reverted it, not the controller


@pytest.mark.unit
def test_a_pause_past_its_deadline_rolls_the_canary_back(tmp_path: Path) -> None:
    from deploy.control import write_control

    clock = FakeClock()
    config = DeployConfig(steps=[10, 100], bake_seconds=5, min_requests=5,
                          scrape_interval_seconds=1.0, max_pause_seconds=30)
    traffic = LeasedRouter(clock, config.canary_lease())
    controller = CanaryController(traffic, SteadySource(clock), config, clock=clock,
                                  sleep=clock.sleep, work_dir=tmp_path)
    write_control(tmp_path, "pause")
    report = controller.run()
    assert report.outcome == "INCONCLUSIVE" and len(report.steps) == 1
    assert "max_pause_seconds" in report.steps[0].analysis.reasons[0]
    assert 30 <= report.steps[0].ended_seconds < 40
    assert traffic.table.lease_expires_at is not None  # renewed while paused, until the end


@pytest.mark.unit
def test_a_lease_shorter_than_two_scrape_intervals_is_refused() -> None:
    with pytest.raises(StageError) as info:
        DeployConfig(scrape_interval_seconds=2.0, canary_lease_seconds=3.0)
    assert info.value.code == "CONFIG_INVALID" and "canary_lease_seconds" in info.value.message
