"""The values stages hand each other check their digests where they are made and where Flyte
reads them back: a malformed digest is DIGEST_INVALID naming the field, not a mismatch found
deep in the next stage."""

from __future__ import annotations

import pytest
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine

from common.errors import StageError
from registry.model_uri import ChampionReference, ModelReference
from tasks.contracts import RegisteredModel

pytestmark = pytest.mark.unit

GOOD = "ab" * 32


def _registered(**changes: object) -> RegisteredModel:
    values: dict[str, object] = dict(
        registered_model_name="shipyard-tiny", version="3", model_uri="models:/shipyard-tiny/3",
        model_digest=GOOD, created=True, aliases=["challenger"], signing_mode="key",
        signer="sha256:" + GOOD, signature_uri="runs:/r/a", signature_digest=GOOD,
        provenance_uri="runs:/r/p", provenance_digest=GOOD, sbom_uri="runs:/r/s",
        sbom_digest=GOOD, builder_id="b", source_repository="r", source_commit="c",
        mlflow_run_id="r")
    values.update(changes)
    return RegisteredModel(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [
    ("model_digest", "sha256:" + GOOD), ("signature_digest", GOOD[:-1]),
    ("sbom_digest", GOOD.upper()), ("provenance_digest", ""),
])
def test_a_contract_with_a_malformed_digest_is_refused_naming_the_field(field: str,
                                                                         value: str) -> None:
    with pytest.raises(StageError) as info:
        _registered(**{field: value})
    assert info.value.code == "DIGEST_INVALID"
    assert f"RegisteredModel.{field}" in str(info.value)


def _round_trip(value: object) -> object:
    ctx = FlyteContextManager.current_context()
    python_type = type(value)
    literal_type = TypeEngine.to_literal_type(python_type)
    literal = TypeEngine.to_literal(ctx, value, python_type, literal_type)
    return TypeEngine.to_python_value(ctx, literal, python_type)


def test_typed_values_survive_flyte_and_an_edited_literal_is_refused_on_read() -> None:
    champion = ChampionReference(ModelReference("shipyard-tiny", "2", GOOD))
    for value in (champion, ChampionReference(), _registered()):
        assert _round_trip(value) == value
    # An altered value between tasks: the literal is written unchecked (object.__setattr__
    # stands in for an edit of the stored literal), and reading it back checks it.
    tampered = _registered()
    object.__setattr__(tampered, "model_digest", "f" * 63)
    ctx = FlyteContextManager.current_context()
    literal = TypeEngine.to_literal(ctx, tampered, RegisteredModel,
                                    TypeEngine.to_literal_type(RegisteredModel))
    with pytest.raises(Exception) as info:
        TypeEngine.to_python_value(ctx, literal, RegisteredModel)
    assert "DIGEST_INVALID" in str(info.value) and "RegisteredModel.model_digest" in str(info.value)


@pytest.mark.parametrize("preset", ["tiny", "smol"])
def test_the_train_config_crosses_to_register_as_a_typed_value_with_the_same_digest(
        preset: str) -> None:
    # register signs `config.to_json()` after checking it against train's `config_digest`:
    # Flyte's round trip must give back the very bytes train hashed.
    from tasks.resolve import resolve

    config = resolve(preset).train
    back = _round_trip(config)
    assert back == config and back.digest() == config.digest()


def test_the_deploy_result_checks_its_digest_too() -> None:
    from deploy.outcomes import DeploymentResult

    values = dict(deployment_name="d", model_uri="models:/m/1", model_digest=GOOD,
                  outcome="PASS", action="promoted", engine="local", backend="local",
                  endpoint="http://127.0.0.1:1", served_model_name="m", champion_version="1",
                  decision_record_path="r.json", decision_record_uri=None, stop_command="s")
    assert _round_trip(DeploymentResult(**values)) == DeploymentResult(**values)  # type: ignore[arg-type]
    with pytest.raises(StageError, match=r"DeploymentResult\.model_digest"):
        DeploymentResult(**{**values, "model_digest": "sha256:" + GOOD})  # type: ignore[arg-type]
