"""The `deploy_canary` Flyte task in flytekit local execution, the way `pyflyte run` calls it:
typed RegisteredModel + DeployConfig in, DeploymentResult out, servers left running."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from common.cost import CostConfig
from deploy.state import load_state
from registry.stage import RegistrationRequest, register_model
from tasks.contracts import DeploymentResult, RegisteredModel
from tasks.deploy_canary import deploy_canary
from tests.deploy.conftest import Registry, register_kwargs
from tests.deploy.http import request
from tests.deploy.scenarios import fast_config, stop_everything

pytestmark = pytest.mark.integration


def test_task_serves_the_first_version_and_returns_its_endpoint(
        registry: Registry, model_dirs: dict[str, Path]) -> None:
    result = register_model(
        RegistrationRequest(**register_kwargs(registry, model_dirs["stable"], "shipyard-task")))
    model = RegisteredModel(
        registered_model_name=result.registered_model_name, version=result.version,
        model_uri=result.model_uri, model_digest=result.model_digest, created=result.created,
        aliases=list(result.aliases), signing_mode=result.signing_mode, signer=result.signer,
        signature_uri=result.signature_uri, signature_digest=result.signature_sha256,
        provenance_uri=result.provenance_uri, provenance_digest=result.provenance_sha256,
        sbom_uri=result.sbom_uri, sbom_digest=result.sbom_sha256, builder_id=result.builder_id,
        source_repository=result.source_repository, source_commit=result.source_commit,
        mlflow_run_id=result.mlflow_run_id)
    try:
        out = deploy_canary(model=model, config=fast_config("local"), prices=CostConfig())
        assert isinstance(out, DeploymentResult)
        assert (out.outcome, out.action, out.engine) == ("PASS", "first_deployment", "local")
        assert out.champion_version == result.version
        program, *words = out.stop_command.split()
        assert Path(program).name == "shipyard" and words == ["stop", "shipyard-test"]
        assert Path(out.decision_record_path).is_file() and out.decision_record_uri
        reply = request(f"{out.endpoint}/v1/models")  # still serving after the task returned
        assert reply.status == 200 and reply.json()["data"][0]["id"] == "shipyard-task"
        assert load_state(registry.settings.home, "shipyard-test").stable is not None
        # the stop command the pipeline prints works as printed (from any directory)
        stopped = subprocess.run(out.stop_command.split(), capture_output=True, text=True,
                                 timeout=120, cwd=registry.settings.home)
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped shipyard-test stable" in stopped.stdout
        assert load_state(registry.settings.home, "shipyard-test").servers() == []
    finally:
        stop_everything(registry.settings, "shipyard-test")
