"""Canary scenarios shared by the local-engine and the real-vLLM end-to-end tests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema

from common.settings import PROJECT_ROOT, Settings
from deploy.config import DeployConfig
from deploy.decision_record_schema import SCHEMA_PATH, load_record
from deploy.local_backend import LocalBackend
from deploy.model_ref import ModelToDeploy
from deploy.stage import DeployOutcome, deploy_canary
from deploy.state import load_state
from registry.aliases import DEFAULT_CHAMPION_ALIAS as CHAMPION_ALIAS
from registry.mlflow_registry import client_for
from tests.deploy.conftest import VLLM_VENV_DIR, evaluated_now
from tests.deploy.http import request

# Injected latency well above the test SLOs below, so a rollback never depends on timing luck.
INJECTED_LATENCY_SECONDS = 3.0


def fast_config(engine: str, **overrides: object) -> DeployConfig:
    """Short bakes with a request floor: a few seconds per step, still judged on traffic.

    The latency SLOs are CI-sized, not production's: 2 shared CPU cores run two engines, the
    router, the load generator and pytest, and a p95 over a handful of requests is close to
    their maximum. The decisions under test (an injected 3 s delay, a 50 % error rate) are far
    outside these bounds; a healthy canary is far inside them.
    """
    base = DeployConfig(
        engine=engine, steps=[10, 50, 100], bake_seconds=5.0, min_requests=5,
        max_ttft_p95_seconds=2.0, max_itl_p95_seconds=1.0, max_latency_ratio=2.0,
        latency_slack_seconds=0.25,
        max_extra_bake_seconds=15.0, scrape_interval_seconds=0.5,
        load_requests_per_second=14.0, load_concurrency=4, load_max_tokens=8,
        engine_ready_timeout_seconds=300.0, vllm_venv_dir=str(VLLM_VENV_DIR),
        # as in the tiny preset: no torch.compile per vLLM engine start (the engine contract
        # suite keeps starting vLLM compiled, the flag-less default)
        enforce_eager=True,
        deployment_name="shipyard-test",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def deploy(model: ModelToDeploy, config: DeployConfig, settings: Settings) -> DeployOutcome:
    """Deploy `model` evaluated against the champion of now (`evaluated_now`)."""
    return deploy_canary(evaluated_now(model, settings), config, settings)


def champion(settings: Settings, name: str) -> str | None:
    aliases = client_for(settings.mlflow_tracking_uri).get_registered_model(name).aliases
    value = aliases.get(CHAMPION_ALIAS)
    return None if value is None else str(value)


def assert_serving(outcome: DeployOutcome, settings: Settings, version: str) -> None:
    """The router answers with the expected model version behind it."""
    state = load_state(settings.home, outcome.deployment_name)
    assert state.router is not None and state.stable is not None
    assert state.stable.model_version == version
    assert state.canary is None
    reply = request(f"{outcome.endpoint}/v1/chat/completions",
                    {"model": outcome.served_model_name, "max_tokens": 2,
                     "messages": [{"role": "user", "content": "What is 1 + 1?"}]})
    assert reply.status == 200, reply.body


def assert_record(outcome: DeployOutcome, settings: Settings) -> dict[str, Any]:
    """The record on disk fits the committed JSON Schema, loads back as what the stage held,
    and its MLflow copy says the same."""
    record = json.loads(Path(outcome.decision_record_path).read_text())
    jsonschema.validate(record, json.loads((PROJECT_ROOT / SCHEMA_PATH).read_text()))
    assert load_record(Path(outcome.decision_record_path)) == outcome.record
    assert record["outcome"] == outcome.outcome and record["action"] == outcome.action
    assert outcome.decision_record_uri is not None
    run_id = outcome.decision_record_uri.split("/")[1]
    client = client_for(settings.mlflow_tracking_uri)
    artifact_root = urlparse(client.get_run(run_id).info.artifact_uri).path
    logged = json.loads((Path(artifact_root) / "deploy" / "decision_record.json").read_text())
    assert logged["outcome"] == record["outcome"]
    return record


def stop_everything(settings: Settings, name: str) -> None:
    LocalBackend(settings.home, name, engine_kind="local").stop_all()
