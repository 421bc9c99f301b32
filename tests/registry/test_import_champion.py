"""The base as the first champion, end to end on a per-test sqlite MLflow: a SmolLM2-shaped
chat model is provisioned, imported and made champion with its history entry, then evaluate
(`eval.champion.load_champion`) and deploy (`verify_for_serving`, the history check) accept it
under a policy listing its source, and refuse it, by check `policy_imported_model`, without."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.errors import StageError
from common.settings import PROJECT_ROOT, Settings
from deploy import history
from deploy.config import DeployConfig
from deploy.session import check_champion_in_history, verify_for_serving
from deploy.state import state_path
from eval.champion import load_champion
from eval.config import EvalConfig
from eval.errors import EvalError
from registry.config import RegisterConfig
from registry.imports import ImportRequest, ImportResult
from registry.policy import LOCAL_TRUST_POLICY_NAME
from testing.tiny_chat_model import build_tiny_chat_model
from tests.registry.conftest import allow_imports_from
from training.pretrained import ProvisionedBase, provision_base_model

pytestmark = pytest.mark.integration

NAME = "shipyard-smol"


@pytest.fixture(scope="session")
def chat_base(tmp_path_factory: pytest.TempPathFactory) -> ProvisionedBase:
    """The tiny chat model provisioned as a local-directory base (`dir:` source)."""
    model = build_tiny_chat_model(tmp_path_factory.mktemp("chat") / "model")
    return provision_base_model(f"dir:{model}", tmp_path_factory.mktemp("base-cache"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    home = tmp_path / ".shipyard"
    return Settings(home=home, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                    mlflow_artifact_root=home / "mlartifacts")


def _import(base: ProvisionedBase,
            settings: Settings) -> tuple[ImportResult, history.HistoryEntry | None]:
    request = ImportRequest(
        model_dir=base.model_dir, base_model_identity=base.identity.to_json(),
        config=RegisterConfig(registered_model_name=NAME),
        tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root,
        key_dir=settings.keys_dir, execution_id="local:development:import-e2e",
        project_root=PROJECT_ROOT)
    return history.import_base_as_champion(request, settings, actor="ci@test")


def _as_eval_and_deploy_would(settings: Settings, tmp_path: Path) -> tuple[str, str]:
    config = EvalConfig(registered_model_name=NAME)
    champion = load_champion(config, settings.mlflow_tracking_uri, settings.keys_dir,
                             tmp_path / "eval-download")
    assert champion is not None
    work_dir = state_path(settings.home, NAME).parent
    check_champion_in_history(champion.version, work_dir, settings, "champion")
    served = verify_for_serving(f"models:/{NAME}/{champion.version}", champion.digest,
                                DeployConfig(), settings, work_dir, NAME)
    assert (served.model_dir / "tokenizer_config.json").is_file()
    return champion.version, served.digest


def test_the_imported_base_is_a_champion_evaluate_and_deploy_accept(
    chat_base: ProvisionedBase, settings: Settings, tmp_path: Path
) -> None:
    allow_imports_from(settings.keys_dir, chat_base.identity.source)
    result, entry = _import(chat_base, settings)

    assert result.created and result.champion_moved and result.version == "1"
    assert entry is not None and (entry.action, entry.version) == ("imported", "1")
    assert entry.digest == chat_base.identity.model_digest
    assert _as_eval_and_deploy_would(settings, tmp_path) == ("1", chat_base.identity.model_digest)

    again, second_entry = _import(chat_base, settings)  # idempotent, history unchanged
    assert (again.version, again.created, second_entry) == ("1", False, None)
    work_dir = state_path(settings.home, NAME).parent
    assert [e.action for e in history.read_history(work_dir)] == ["imported"]


def test_without_the_policy_key_evaluate_and_deploy_refuse_the_imported_champion(
    chat_base: ProvisionedBase, settings: Settings, tmp_path: Path
) -> None:
    policy_path = allow_imports_from(settings.keys_dir, chat_base.identity.source)
    _import(chat_base, settings)
    raw = yaml.safe_load(policy_path.read_text())
    raw["allowed_import_sources"] = []  # the user withdraws the trust
    policy_path.write_text(yaml.safe_dump(raw))
    assert policy_path.name == LOCAL_TRUST_POLICY_NAME

    with pytest.raises(EvalError) as refused_by_eval:
        load_champion(EvalConfig(registered_model_name=NAME), settings.mlflow_tracking_uri,
                      settings.keys_dir, tmp_path / "eval-download")
    assert refused_by_eval.value.code == "EVAL_CHAMPION_REJECTED"
    assert refused_by_eval.value.details["check"] == "policy_imported_model"
    with pytest.raises(StageError) as refused_by_deploy:
        verify_for_serving(f"models:/{NAME}/1", chat_base.identity.model_digest, DeployConfig(),
                           settings, state_path(settings.home, NAME).parent, NAME)
    assert refused_by_deploy.value.code == "DEPLOY_MODEL_REJECTED"
    assert refused_by_deploy.value.details["check"] == "policy_imported_model"


def test_an_import_the_local_policy_does_not_list_is_refused_before_it_is_champion(
    chat_base: ProvisionedBase, settings: Settings
) -> None:
    from registry.errors import RegistryError

    # The default local policy lists only the packaged SmolLM2, not this local directory.
    with pytest.raises(RegistryError) as failure:
        _import(chat_base, settings)
    assert failure.value.code == "SELF_CHECK_FAILED"
    assert failure.value.check == "policy_imported_model"
    assert history.read_history(state_path(settings.home, NAME).parent) == []
