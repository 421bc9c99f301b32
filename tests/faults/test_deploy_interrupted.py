"""A deploy stopped mid-bake leaves nothing running and nothing half-written.

The deploy runs as its own process (as under Flyte), with a long bake so the signal lands
while the canary takes traffic. SIGTERM: its cleanup rolls the canary back and stops it.
SIGKILL: no cleanup can run; the canary outlives it (deploy's servers are long-lived by
design), and the next deploy rolls that leftover back before anything else. Either way the
champion alias never moves and the stable keeps serving."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import StageError
from common.settings import PROJECT_ROOT
from deploy.local_backend import LocalBackend
from deploy.model_ref import ModelToDeploy
from deploy.stage import deployment_lock
from deploy.state import load_state, state_path
from serving.process import pid_alive
from tests.deploy.conftest import Registry
from tests.deploy.scenarios import (
    assert_serving,
    champion,
    deploy,
    fast_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]
MODEL = "shipyard-faults"
NAME = "shipyard-test"

_CHILD = """
import pickle, sys
from tests.deploy.scenarios import deploy, fast_config
model, settings = pickle.load(open(sys.argv[1], "rb"))
deploy(model, fast_config("local", steps=[50, 100], bake_seconds=600.0), settings)
"""


def _deploy_in_a_process(registry: Registry, model: object, tmp_path: Path
                         ) -> subprocess.Popen[bytes]:
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((model, registry.settings)))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(args)], cwd=PROJECT_ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=open(
                                tmp_path / "child.log", "wb"))


def _wait_for_canary_in_traffic(registry: Registry, child: subprocess.Popen[bytes],
                                tmp_path: Path) -> int:
    """The canary's pid, once the router sends it traffic (the bake has begun)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
        state = load_state(registry.settings.home, NAME)
        if state.canary is not None and state.router is not None:
            admin = LocalBackend(registry.settings.home, NAME, engine_kind="local")
            if admin.admin_client().get("state")["weights"].get("canary"):
                return state.canary.pid
        time.sleep(0.2)
    raise AssertionError("the canary never took traffic")


def _gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_sigterm_mid_bake_rolls_the_canary_back_and_stops_it(
        registry: Registry, model_dirs: dict[str, Path], stable: ModelToDeploy,
        tmp_path: Path) -> None:
    v2 = registry.register(model_dirs["canary"], MODEL)
    child = _deploy_in_a_process(registry, v2, tmp_path)
    canary_pid = _wait_for_canary_in_traffic(registry, child, tmp_path)

    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=120) != 0  # interrupted, not "done"
    assert "StageInterrupted" in (tmp_path / "child.log").read_text()
    assert _gone(canary_pid), "the canary engine outlived the interrupted deploy"
    state = load_state(registry.settings.home, NAME)
    assert state.canary is None
    admin = LocalBackend(registry.settings.home, NAME, engine_kind="local").admin_client()
    assert set(admin.get("state")["backends"]) == {"stable"}
    assert champion(registry.settings, MODEL) == stable.version
    assert_serving_version(registry, stable.version)


def test_sigkill_mid_bake_leftover_canary_is_rolled_back_by_the_next_deploy(
        registry: Registry, model_dirs: dict[str, Path], stable: ModelToDeploy,
        tmp_path: Path) -> None:
    v2 = registry.register(model_dirs["canary"], MODEL)
    child = _deploy_in_a_process(registry, v2, tmp_path)
    canary_pid = _wait_for_canary_in_traffic(registry, child, tmp_path)

    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    # nothing ran: the canary is still recorded (and, long-lived by design, still running)
    assert load_state(registry.settings.home, NAME).canary is not None
    assert champion(registry.settings, MODEL) == stable.version

    outcome = deploy(v2, fast_config("local", steps=[50, 100]), registry.settings)
    assert _gone(canary_pid), "the leftover canary was not stopped"
    assert any("left by an interrupted deploy" in note for note in outcome.record.notes)
    assert (outcome.outcome, outcome.action) == ("PASS", "promoted")
    assert champion(registry.settings, MODEL) == v2.version
    assert_serving(outcome, registry.settings, v2.version)


def test_two_deploys_of_one_deployment_never_interleave(registry: Registry) -> None:
    work_dir = state_path(registry.settings.home, NAME).parent
    with deployment_lock(work_dir, NAME), pytest.raises(StageError) as info, \
            deployment_lock(work_dir, NAME):
        pass
    assert info.value.code == "DEPLOY_LOCKED" and f"pid {os.getpid()}" in info.value.message
    with deployment_lock(work_dir, NAME):  # released with its holder
        pass


def assert_serving_version(registry: Registry, version: str) -> None:
    state = load_state(registry.settings.home, NAME)
    assert state.stable is not None and state.stable.model_version == version
    assert pid_alive(state.stable.pid)
