"""Serving faults on real local engines: the canary engine crashing mid-bake, the router
killed between deploys. Each ends with the champion where it belongs and nothing leaked."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from deploy.model_ref import ModelToDeploy
from deploy.state import load_state
from serving.process import pid_alive
from tests.deploy.conftest import Registry
from tests.deploy.http import request
from tests.deploy.scenarios import (
    assert_serving,
    champion,
    deploy,
    fast_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]
MODEL = "shipyard-serving-faults"
NAME = "shipyard-test"


def test_canary_engine_crashing_mid_bake_fails_and_rolls_back(
        registry: Registry, model_dirs: dict[str, Path], stable: ModelToDeploy) -> None:
    v2 = registry.register(model_dirs["canary"], MODEL)
    killed: list[int] = []

    def crash_the_canary_once_it_serves() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = load_state(registry.settings.home, NAME)
            if state.canary is not None:
                time.sleep(1.0)  # into the bake
                os.killpg(state.canary.pid, signal.SIGKILL)
                killed.append(state.canary.pid)
                return
            time.sleep(0.1)

    crasher = threading.Thread(target=crash_the_canary_once_it_serves, daemon=True)
    crasher.start()
    outcome = deploy(v2, fast_config("local", steps=[50, 100], bake_seconds=8.0),
                     registry.settings)
    crasher.join(timeout=10)
    assert killed, "the canary never started"
    assert (outcome.outcome, outcome.action) == ("FAIL", "rolled_back")
    failed = {c["name"] for step in outcome.record.steps for c in step["checks"]
              if c["status"] == "FAIL"}
    assert failed & {"error_rate", "error_rate_vs_stable"}, failed
    assert champion(registry.settings, MODEL) == stable.version
    assert_serving(outcome, registry.settings, stable.version)
    assert not pid_alive(killed[0])


def test_router_killed_between_deploys_is_restarted(
        registry: Registry, model_dirs: dict[str, Path], stable: ModelToDeploy) -> None:
    router = load_state(registry.settings.home, NAME).router
    assert router is not None
    kill_and_wait(router.pid)

    # Re-deploying the champion brings its router back (on a new port).
    again = deploy(stable, fast_config("local"), registry.settings)
    assert again.action == "already_serving"
    assert any("router was gone" in note for note in again.record.notes)
    assert again.endpoint != router.base_url
    assert request(f"{again.endpoint}/v1/models").status == 200

    # and a canary deploy after another router crash still works
    second = load_state(registry.settings.home, NAME).router
    assert second is not None
    kill_and_wait(second.pid)
    v2 = registry.register(model_dirs["canary"], MODEL)
    outcome = deploy(v2, fast_config("local", steps=[50, 100]), registry.settings)
    assert (outcome.outcome, outcome.action) == ("PASS", "promoted")
    assert_serving(outcome, registry.settings, v2.version)


def kill_and_wait(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)


def test_champion_moved_during_the_bake_refuses_the_promotion(
        registry: Registry, model_dirs: dict[str, Path], stable: ModelToDeploy) -> None:
    """Someone moves the alias (MLflow UI, API) while the canary bakes: the canary never takes
    all traffic, it is rolled back, and the alias keeps what the other writer set."""
    from registry.aliases import move_champion
    from registry.errors import RegistryError
    from registry.mlflow_registry import client_for

    v2 = registry.register(model_dirs["canary"], MODEL)
    v3 = registry.register(model_dirs["slow"], MODEL)
    client = client_for(registry.settings.mlflow_tracking_uri)

    def move_alias_once_the_canary_serves() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if load_state(registry.settings.home, NAME).canary is not None:
                move_champion(client, MODEL, v3.version,  # behind the deploy's back
                              expected_current=stable.version)
                return
            time.sleep(0.1)

    mover = threading.Thread(target=move_alias_once_the_canary_serves, daemon=True)
    mover.start()
    with pytest.raises(RegistryError) as info:
        deploy(v2, fast_config("local", steps=[50, 100]), registry.settings)
    mover.join(timeout=10)
    assert info.value.code == "CHAMPION_MOVED"
    state = load_state(registry.settings.home, NAME)
    assert state.canary is None and state.stable is not None
    assert state.stable.model_version == stable.version  # the canary never took over
    assert champion(registry.settings, MODEL) == v3.version
