"""`load_champion`: the baseline is found by the shared champion alias and verified by
registry.verify_model before the stage uses it, in a real (sqlite) MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.digests import model_root_digest
from common.settings import load_settings
from eval.champion import (
    NO_CHAMPION,
    Champion,
    champion_reference,
    check_compared_against,
    load_champion,
)
from eval.config import EvalConfig
from eval.errors import EvalError
from registry.model_uri import ChampionReference, ModelReference
from tests.eval.champions import register_champion, settings_store, tamper_with_weights
from tests.eval.conftest import TinyModel
from tests.registry.conftest import SPLITS, register

pytestmark = pytest.mark.integration


def _load(config: EvalConfig, tmp_path: Path) -> Champion | None:
    settings = load_settings()
    return load_champion(config, settings.mlflow_tracking_uri, settings.keys_dir,
                         tmp_path / "champion")


def test_no_champion_before_the_first_deployment(tiny_model: TinyModel, tiny_dataset_dir: Path,
                                                 tmp_path: Path) -> None:
    assert _load(EvalConfig(registered_model_name="never-registered"), tmp_path) is None
    assert _load(EvalConfig(registered_model_name=None), tmp_path) is None
    # Registered (alias `challenger`), never deployed: still no champion.
    register(settings_store(), tiny_model.model_dir,
             {s: tiny_dataset_dir / f"{s}.jsonl" for s in SPLITS}, "registered-only")
    assert _load(EvalConfig(registered_model_name="registered-only"), tmp_path) is None
    # ... and evaluate's cache key says so (the pipeline's champion_reference task)
    uri = load_settings().mlflow_tracking_uri
    assert champion_reference(EvalConfig(registered_model_name="registered-only"), uri) == \
        NO_CHAMPION == champion_reference(EvalConfig(registered_model_name=None), uri)


def test_the_champion_is_read_by_the_configured_alias_and_verified(
        tiny_model: TinyModel, tiny_dataset_dir: Path, tmp_path: Path) -> None:
    register_champion(tiny_model, tiny_dataset_dir, "aliased", champion_alias="production")

    assert _load(EvalConfig(registered_model_name="aliased"), tmp_path / "a") is None
    champion = _load(EvalConfig(registered_model_name="aliased", champion_alias="production"),
                     tmp_path / "b")

    assert champion is not None and champion.version == "1"
    assert champion.digest == tiny_model.digest
    assert model_root_digest(champion.model_dir) == tiny_model.digest  # the verified bytes

    # The reference read before evaluate (its cache key) names the version and the digest the
    # verified champion has, so an evaluation against this champion passes the check ...
    config = EvalConfig(registered_model_name="aliased", champion_alias="production")
    reference = champion_reference(config, load_settings().mlflow_tracking_uri)
    assert reference == ChampionReference(ModelReference("aliased", "1", tiny_model.digest))
    assert str(reference) == f"models:/aliased/1 sha256:{tiny_model.digest}"
    check_compared_against(reference, "aliased", champion.version, champion.digest)
    # ... and one measured against any other baseline is refused, never cached under it.
    for used in (("2", champion.digest), ("1", "0" * 64), (None, None)):
        with pytest.raises(EvalError) as caught:
            check_compared_against(reference, "aliased", *used)
        assert caught.value.code == "EVAL_CHAMPION_MOVED"
        assert caught.value.details["looked_up"] == str(reference)
    with pytest.raises(EvalError) as caught:  # a champion appeared after the lookup
        check_compared_against(NO_CHAMPION, "aliased", "1", champion.digest)
    assert caught.value.code == "EVAL_CHAMPION_MOVED"


def test_a_tampered_champion_is_refused_naming_the_check(
        tiny_model: TinyModel, tiny_dataset_dir: Path, tmp_path: Path) -> None:
    tamper_with_weights(register_champion(tiny_model, tiny_dataset_dir, "tampered"))

    with pytest.raises(EvalError) as caught:
        _load(EvalConfig(registered_model_name="tampered"), tmp_path)

    assert caught.value.code == "EVAL_CHAMPION_REJECTED"
    assert caught.value.details["check"] == "model_signature"
    assert caught.value.details["model_uri"] == "models:/tampered/1"
