"""The deploy stage refuses an engine that does not serve the evaluated model: a first stable is
stopped before it is made champion, a canary is rolled back at weight 0; both are recorded.

Real local engines, router and MLflow registry. The mismatch is made at the reference: the
parity reference is loaded from another tiny model than the verified one the engine serves
(the local engine and transformers compute the same thing from the same files, so nothing
else makes them disagree here); tests/deploy/test_parity_vllm.py refuses real vLLM serving
another model than the reference without any substitution.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import deploy.parity as parity
from common.digests import sha256_digest
from common.errors import StageError
from deploy.kubernetes_backend import KubernetesBackend, render_overlay
from deploy.model_ref import VerifiedModel
from deploy.state import load_state
from tests.deploy.conftest import Registry, live_descendants
from tests.deploy.fake_kubernetes import FakeDynamicClient
from tests.deploy.scenarios import assert_serving, champion, deploy, fast_config, stop_everything

pytestmark = pytest.mark.integration
MODEL = "shipyard-deploy-parity"


@pytest.fixture
def stopped(registry: Registry) -> Iterator[Registry]:
    yield registry
    stop_everything(registry.settings, "shipyard-test")


def _reference_from(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    """The evaluated model is `model_dir`, whatever the engine was given."""
    load = parity.ReferenceModel.load
    monkeypatch.setattr(parity.ReferenceModel, "load",
                        classmethod(lambda cls, _served_dir: load(model_dir)))


def _refusal_record(error: StageError) -> dict[str, Any]:
    record = json.loads(Path(error.details["decision_record"]).read_text())
    assert (record["outcome"], record["action"]) == ("FAIL", "refused")
    assert record["champion"]["moved"] is False
    return record


def test_first_stable_serving_another_model_is_stopped_and_never_champion(
        stopped: Registry, model_dirs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = stopped.register(model_dirs["stable"], MODEL)
    _reference_from(monkeypatch, model_dirs["canary"])
    before = live_descendants()
    with pytest.raises(StageError) as caught:
        deploy(v1, fast_config("local"), stopped.settings)
    assert caught.value.code == "DEPLOY_SERVED_MODEL_MISMATCH"
    assert "stable engine" in caught.value.message and "Likely cause" in caught.value.message
    assert champion(stopped.settings, MODEL) is None
    assert live_descendants() == before  # engine and router stopped
    assert load_state(stopped.settings.home, "shipyard-test").servers() == []
    check = _refusal_record(caught.value)["parity"]["stable"]
    assert check["matched"] is False and check["mismatch"]["prompt_id"] == "arithmetic"
    assert check["prompts_version"] == parity.PROMPTS_VERSION


def test_canary_serving_another_model_is_rolled_back_before_it_takes_traffic(
        stopped: Registry, model_dirs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stopped.settings
    v1 = stopped.register(model_dirs["stable"], MODEL)
    v2 = stopped.register(model_dirs["canary"], MODEL)
    first = deploy(v1, fast_config("local"), settings)
    assert first.record.parity is not None
    stable_check = first.record.parity.stable or {}
    assert stable_check["matched"] is True
    assert stable_check["num_tokens_compared"] > 0 and stable_check["max_logprob_diff"] < 1e-4

    _reference_from(monkeypatch, model_dirs["slow"])
    with pytest.raises(StageError) as caught:
        deploy(v2, fast_config("local"), settings)
    assert caught.value.code == "DEPLOY_SERVED_MODEL_MISMATCH"
    assert "canary" in caught.value.message
    assert champion(settings, MODEL) == v1.version
    assert_serving(first, settings, v1.version)  # canary gone, the stable serves on
    record = _refusal_record(caught.value)
    assert record["parity"]["canary"]["matched"] is False
    assert record["steps"] == []  # it never took a share of traffic


@pytest.mark.unit
def test_kubernetes_checks_the_stable_through_the_gateway_and_cannot_reach_the_canary() -> None:
    """The stage reaches Kubernetes engines only through the gateway (NetworkPolicy, API key):
    the stable while the canary has no weight, never the canary (the record says skipped)."""
    backend = KubernetesBackend(FakeDynamicClient(), render_overlay(Path("infra/k8s/overlays/gpu")),
                                namespace="shipyard", endpoint="http://gateway.example",
                                prometheus_url="http://prometheus.example:9090",
                                poll_seconds=0.0, sleep=lambda _: None)
    model = VerifiedModel("models:/m/1", "1", sha256_digest("ab" * 32),
                          Path("/models/current/model"), "m")
    backend.start_stable(model)
    assert backend.track_url("stable") == "http://gateway.example"
    backend.start_canary(replace(model, version="2"))
    assert backend.track_url("canary") is None
    backend.set_canary_weight(10)
    assert backend.track_url("stable") is None  # the gateway would reach both tracks now
