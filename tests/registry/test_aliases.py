"""`registry.aliases`, the one owner of the champion and challenger aliases, against a real
(sqlite) MLflow store; and the one preset key that names the champion alias for every stage."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from common.errors import StageError
from registry.aliases import (
    CHALLENGER_ALIAS,
    DEFAULT_CHAMPION_ALIAS,
    alias_versions,
    aliases_of,
    champion_version,
    check_champion_alias,
    move_champion,
    set_challenger,
)
from registry.config import RegisterConfig
from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from tasks.resolve import resolve
from tests.registry.conftest import Store

pytestmark = pytest.mark.unit


def _versions(client: MlflowClient, name: str, count: int) -> None:
    """`count` versions of `name`; alias logic needs versions, not their files."""
    experiment = client.get_experiment_by_name("aliases-test")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("aliases-test"))
    run_id = client.create_run(experiment_id).info.run_id
    client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)


@pytest.fixture
def client(store: Store) -> MlflowClient:
    return client_for(store.tracking_uri)


def test_no_champion_before_the_first_deployment(client: MlflowClient, model_name: str) -> None:
    assert champion_version(client, model_name) is None  # no registered model at all
    assert alias_versions(client, model_name) == {}
    _versions(client, model_name, 1)
    assert champion_version(client, model_name) is None  # a model, no alias yet


def test_champion_moves_only_through_move_champion(client: MlflowClient, model_name: str
                                                   ) -> None:
    _versions(client, model_name, 2)
    assert set_challenger(client, model_name, "1")
    assert champion_version(client, model_name) is None  # challenger is not champion

    move_champion(client, model_name, "1", expected_current=None)
    assert champion_version(client, model_name) == "1"  # a string, whatever the store returns
    move_champion(client, model_name, "2", expected_current="1")
    assert champion_version(client, model_name) == "2"
    assert aliases_of(client, model_name, "2") == [DEFAULT_CHAMPION_ALIAS]
    assert alias_versions(client, model_name) == {CHALLENGER_ALIAS: "1",
                                                  DEFAULT_CHAMPION_ALIAS: "2"}


def test_challenger_never_lands_on_the_champion(client: MlflowClient, model_name: str) -> None:
    _versions(client, model_name, 2)
    move_champion(client, model_name, "1", expected_current=None)
    assert not set_challenger(client, model_name, "1")
    assert aliases_of(client, model_name, "1") == ["champion"]
    assert set_challenger(client, model_name, "2")
    assert aliases_of(client, model_name, "2") == ["challenger"]


def test_a_configured_champion_alias_is_the_one_compared_and_moved(
        client: MlflowClient, model_name: str) -> None:
    _versions(client, model_name, 2)
    move_champion(client, model_name, "1", "production", expected_current=None)
    assert champion_version(client, model_name, "production") == "1"
    assert champion_version(client, model_name) is None  # `champion` was never set
    # `challenger` is refused on the version `production` names, not on a `champion`.
    assert not set_challenger(client, model_name, "1", "production")
    assert set_challenger(client, model_name, "2", "production")
    assert alias_versions(client, model_name) == {"production": "1", "challenger": "2"}


@pytest.mark.parametrize("alias", ["challenger", "latest", "v3", "prod alias", ""])
def test_champion_alias_names_that_cannot_work_are_refused(alias: str) -> None:
    with pytest.raises(RegistryError) as caught:
        check_champion_alias(alias)
    assert caught.value.code == "CONFIG_INVALID"
    with pytest.raises(RegistryError):
        RegisterConfig(champion_alias=alias)


def test_one_preset_key_names_the_champion_alias_for_evaluate_and_deploy() -> None:
    default = resolve("tiny")
    assert default.eval.champion_alias == default.deploy.champion_alias == "champion"

    resolved = resolve("tiny", ["register.champion_alias=production"])
    assert resolved.register.champion_alias == "production"
    assert resolved.eval.champion_alias == resolved.deploy.champion_alias == "production"

    for section in ("eval", "deploy"):  # a second place to set it would let them disagree
        with pytest.raises(StageError) as caught:
            resolve("tiny", [f"{section}.champion_alias=production"])
        assert caught.value.code == "CONFIG_UNKNOWN_KEY"
        assert "register.champion_alias" in caught.value.message
