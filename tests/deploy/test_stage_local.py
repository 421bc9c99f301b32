"""The deploy stage end to end on the local engine (fast): fail-closed verification, first
deployment, promotion, rollback, and the status/stop CLI that finds what it left running."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import StageError
from deploy import cli
from deploy.local_backend import LocalBackend
from deploy.state import load_state, state_path
from registry.mlflow_registry import client_for
from tests.deploy.conftest import Registry, live_descendants
from tests.deploy.http import request
from tests.deploy.scenarios import (
    INJECTED_LATENCY_SECONDS,
    assert_record,
    assert_serving,
    champion,
    deploy,
    fast_config,
    stop_everything,
)

pytestmark = pytest.mark.integration
MODEL = "shipyard-deploy-local"


@pytest.fixture
def stopped(registry: Registry) -> Iterator[Registry]:
    yield registry
    stop_everything(registry.settings, "shipyard-test")


def test_rejected_model_is_refused_before_any_process_starts(
        stopped: Registry, model_dirs: dict[str, Path], tmp_path: Path) -> None:
    model_dir = Path(tmp_path / "model")
    import shutil

    shutil.copytree(model_dirs["stable"], model_dir)
    rejected = stopped.register(model_dir, MODEL)
    # An attacker with write access to the artifact store swaps a weight file.
    client = client_for(stopped.settings.mlflow_tracking_uri)
    assert rejected.mlflow_run_id is not None
    artifacts = Path(client.get_run(rejected.mlflow_run_id).info.artifact_uri.removeprefix(
        "file://"))
    weights = artifacts / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    before = live_descendants()
    with pytest.raises(StageError) as caught:
        deploy(rejected, fast_config("local"), stopped.settings)
    assert caught.value.code == "DEPLOY_MODEL_REJECTED"
    assert caught.value.details["check"] == "model_signature"
    assert live_descendants() == before  # not a single process was started
    assert not state_path(stopped.settings.home, "shipyard-test").exists()
    assert champion(stopped.settings, MODEL) is None


def test_first_deployment_then_healthy_canary_is_promoted(
        stopped: Registry, model_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stopped.settings
    v1 = stopped.register(model_dirs["stable"], MODEL)
    v2 = stopped.register(model_dirs["canary"], MODEL)

    first = deploy(v1, fast_config("local"), settings)
    assert (first.outcome, first.action, first.engine) == ("PASS", "first_deployment", "local")
    assert champion(settings, MODEL) == v1.version
    assert_serving(first, settings, v1.version)

    second = deploy(v2, fast_config("local", steps=[25, 100]), settings)
    assert (second.outcome, second.action) == ("PASS", "promoted")
    assert champion(settings, MODEL) == v2.version
    assert second.endpoint == first.endpoint  # same router: clients never saw a change
    assert_serving(second, settings, v2.version)
    record = assert_record(second, settings)
    assert [s["canary_percent"] for s in record["steps"]] == [25, 100]
    assert all(s["outcome"] == "PASS" for s in record["steps"])
    assert record["load"]["lost"] == 0

    out = capsys.readouterr().out
    assert f"endpoint:  {second.endpoint}/v1" in out and "stop with:" in out
    assert cli.main(["status", "shipyard-test"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status["running"]) == {"router", "stable"}
    assert cli.main(["stop", "shipyard-test"]) == 0
    assert load_state(settings.home, "shipyard-test").servers() == []


def test_canary_with_injected_latency_is_rolled_back(
        stopped: Registry, model_dirs: dict[str, Path]) -> None:
    settings = stopped.settings
    v1 = stopped.register(model_dirs["stable"], MODEL)
    v2 = stopped.register(model_dirs["slow"], MODEL)
    deploy(v1, fast_config("local"), settings)

    config = fast_config("local", inject_canary_latency_seconds=INJECTED_LATENCY_SECONDS)
    outcome = deploy(v2, config, settings)
    assert (outcome.outcome, outcome.action) == ("FAIL", "rolled_back")
    assert champion(settings, MODEL) == v1.version  # champion untouched
    assert_serving(outcome, settings, v1.version)  # canary gone, stable serving
    record = assert_record(outcome, settings)
    failed = [c["name"] for c in record["steps"][-1]["checks"]
              if c["status"] == "FAIL"]
    assert "ttft_p95" in failed
    # the drill ended with its canary: the long-lived router injects nothing any more
    admin = LocalBackend(settings.home, outcome.deployment_name, engine_kind="local").admin_client()
    assert admin.get("state")["faults"] == {}
    # the admin API is not on the serving port
    assert request(f"{outcome.endpoint}/admin/state").status == 404
