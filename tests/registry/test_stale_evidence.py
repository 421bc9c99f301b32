"""Every evaluation leaves its own signed eval attestation on the version, and deploy judges
the newest one measured against the champion it would replace: a PASS against an older
champion is stale (DEPLOY_EVIDENCE_STALE), a FAIL against an older champion blocks nothing.

A real signed registry and deploy's own verification (`verify_for_serving`, what
`deploy_canary` runs before anything starts); no engine is started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.digests import sha256_digest
from common.errors import StageError
from deploy.config import DeployConfig
from deploy.model_ref import ModelToDeploy, VerifiedModel
from deploy.stage import current_champion, verify_for_serving
from deploy.state import state_path
from registry import eval_attestation as eval_att
from registry.aliases import move_champion
from registry.mlflow_registry import client_for
from registry.stage import RegistrationRequest, RegistrationResult, register_model
from tests.deploy.conftest import (
    Registry,
    live_descendants,
    model_dirs,
    no_leaked_servers,
    register_kwargs,
    registry,
)
from tests.deploy.scenarios import champion, fast_config

__all__ = ["model_dirs", "no_leaked_servers", "registry"]  # fixtures used here

pytestmark = pytest.mark.integration
MODEL = "shipyard-evidence"


def _report(outcome: str, against: RegistrationResult | None) -> dict[str, Any]:
    """The evaluate stage's report, as far as deploy cares: the outcome and the champion."""
    return {"gate_outcome": outcome, "summary": {"gate": outcome},
            "champion": None if against is None else {"digest": against.model_digest}}


def _register(registry: Registry, model_dir: Path, report: dict[str, Any]) -> RegistrationResult:
    kwargs = {**register_kwargs(registry, model_dir, MODEL), "eval_report": report}
    return register_model(RegistrationRequest(**kwargs))


def _crown(registry: Registry, version: RegistrationResult) -> None:
    client = client_for(registry.settings.mlflow_tracking_uri)
    current = champion(registry.settings, MODEL)
    move_champion(client, MODEL, version.version, expected_current=current)


def _verify_for_deploy(registry: Registry, model: RegistrationResult) -> VerifiedModel:
    """What deploy_canary verifies before it starts anything, against the champion of now."""
    settings = registry.settings
    client = client_for(settings.mlflow_tracking_uri)
    request = ModelToDeploy(MODEL, model.version, sha256_digest(model.model_digest),
                            model.mlflow_run_id)
    work_dir = state_path(settings.home, MODEL).parent
    return verify_for_serving(
        model.model_uri, model.model_digest, DeployConfig(), settings, work_dir, MODEL,
        evaluated_against=current_champion(client, request, champion(settings, MODEL)))


def _evaluation_files(registry: Registry, result: RegistrationResult) -> list[str]:
    client = client_for(registry.settings.mlflow_tracking_uri)
    folder = f"attestations/{eval_att.EVALUATIONS_DIR}"
    return sorted(Path(info.path).name for info in client.list_artifacts(
        result.mlflow_run_id, folder))


def test_every_evaluation_of_a_registered_digest_keeps_its_own_signed_attestation(
        registry: Registry, model_dirs: dict[str, Path]) -> None:
    v1 = _register(registry, model_dirs["stable"], _report("PASS", None))
    v2 = _register(registry, model_dirs["canary"], _report("PASS", None))
    again = _register(registry, model_dirs["canary"], _report("FAIL", v1))
    assert (again.version, again.created) == (v2.version, False)
    files = _evaluation_files(registry, v2)
    assert len(files) == 2 and {f.split(".")[1] for f in files} == {"dsse", "report"}
    # a retried registration with the same report adds nothing; a third evaluation adds one
    _register(registry, model_dirs["canary"], _report("FAIL", v1))
    assert _evaluation_files(registry, v2) == files
    _register(registry, model_dirs["canary"], _report("PASS", v1))
    assert len(_evaluation_files(registry, v2)) == 4
    # the first one stays where it was, bound to the provenance
    client = client_for(registry.settings.mlflow_tracking_uri)
    first = [i.path for i in client.list_artifacts(v2.mlflow_run_id, "attestations")]
    assert f"attestations/{eval_att.KEY_FILE}" in first
    tags = client.get_model_version(MODEL, v2.version).tags
    assert tags["eval_gate"] == "PASS"  # readers see the latest evaluation


def test_a_pass_against_an_older_champion_is_refused_before_anything_starts(
        registry: Registry, model_dirs: dict[str, Path]) -> None:
    v1 = _register(registry, model_dirs["stable"], _report("PASS", None))
    # v2 passed its gate when there was no champion; then v1 became the champion
    v2 = _register(registry, model_dirs["canary"], _report("PASS", None))
    _crown(registry, v1)

    with pytest.raises(StageError) as stale:
        _verify_for_deploy(registry, v2)
    assert stale.value.code == "DEPLOY_EVIDENCE_STALE"
    assert f"models:/{MODEL}/{v1.version}" in stale.value.message  # the current champion
    assert "Re-run evaluate against the current champion" in stale.value.message
    assert stale.value.details == {"check": eval_att.CHECK_CHAMPION,
                                   "expected": f"sha256:{v1.model_digest}",
                                   "found": "no champion"}

    # the whole deploy refuses it too, before a single process starts
    before = live_descendants()
    request = ModelToDeploy(MODEL, v2.version, sha256_digest(v2.model_digest), v2.mlflow_run_id)
    from deploy.stage import deploy_canary

    with pytest.raises(StageError) as refused:
        deploy_canary(request, fast_config("local", deployment_name=MODEL), registry.settings)
    assert refused.value.code == "DEPLOY_EVIDENCE_STALE"
    assert live_descendants() == before
    assert champion(registry.settings, MODEL) == v1.version

    # evaluated against v1 now: the new evaluation is added and deploy accepts it
    _register(registry, model_dirs["canary"], _report("PASS", v1))
    assert _verify_for_deploy(registry, v2).digest == v2.model_digest


def test_an_old_fail_does_not_block_a_new_pass_against_the_current_champion(
        registry: Registry, model_dirs: dict[str, Path]) -> None:
    v1 = _register(registry, model_dirs["stable"], _report("PASS", None))
    v2 = _register(registry, model_dirs["canary"], _report("FAIL", None))
    _crown(registry, v1)
    _register(registry, model_dirs["canary"], _report("PASS", v1))
    assert _verify_for_deploy(registry, v2).digest == v2.model_digest


def test_the_newest_evaluation_against_the_current_champion_decides(
        registry: Registry, model_dirs: dict[str, Path]) -> None:
    """A PASS then a FAIL against the same champion: the FAIL is the evidence (re-running the
    evaluation until it passes needs the last run to pass, not any run)."""
    v1 = _register(registry, model_dirs["stable"], _report("PASS", None))
    _crown(registry, v1)
    v2 = _register(registry, model_dirs["canary"], _report("PASS", v1))
    failed = {**_report("FAIL", v1), "summary": {"gate": "FAIL", "run": 2}}
    _register(registry, model_dirs["canary"], failed)
    with pytest.raises(StageError) as refused:
        _verify_for_deploy(registry, v2)
    assert refused.value.code == "DEPLOY_MODEL_REJECTED"
    assert refused.value.details["check"] == "policy_eval_gate"


def test_the_first_deployment_needs_an_evaluation_without_a_champion(
        registry: Registry, model_dirs: dict[str, Path]) -> None:
    v1 = _register(registry, model_dirs["stable"], _report("PASS", None))
    assert _verify_for_deploy(registry, v1).digest == v1.model_digest
    other = _register(registry, model_dirs["canary"], _report("PASS", v1))  # v1 never served
    with pytest.raises(StageError) as stale:
        _verify_for_deploy(registry, other)
    assert stale.value.code == "DEPLOY_EVIDENCE_STALE"
    assert json.dumps(stale.value.details["expected"]) == '"no champion"'
