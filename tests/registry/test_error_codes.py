"""Each RegistryError code the registry raises, triggered through the function a caller uses.

The refusals before any signing (model directory, config digest, training run) go through
`register_model` against the session's real sqlite MLflow store; key, signing and trust-root
mistakes go through the signing functions on real keys in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from registry import mlflow_registry as reg
from registry import provenance as prov
from registry.attest import BuildInputs, Signer, write_attestations
from registry.config import RegisterConfig
from registry.dsse import sign_statement, verify_statement
from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from registry.policy import Policy
from registry.signing import (
    ensure_key_pair,
    public_key_fingerprint,
    sign_model,
    verify_model_signature,
)
from registry.source import SourceInfo
from registry.stage import RegistrationRequest, register_model
from registry.verify import verify_model
from tests.registry.conftest import Store, stage_kwargs


def _model(tmp_path: Path) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    # Any directory will do: these checks and signing never load the weights.
    return model_dir


def _register(**kwargs: object) -> None:
    register_model(RegistrationRequest(**kwargs))  # type: ignore[arg-type]


# ---- register_model refuses its inputs before anything is signed or written -------------


@pytest.mark.integration
def test_missing_model_dir(
    store: Store, dataset_files: dict[str, Path], tmp_path: Path
) -> None:
    kwargs = stage_kwargs(store, _model(tmp_path), dataset_files, "t-missing-dir")
    kwargs["model_dir"] = tmp_path / "gone"
    with pytest.raises(RegistryError) as info:
        _register(**kwargs)
    assert info.value.code == "MODEL_DIR_MISSING"


@pytest.mark.integration
def test_config_digest_mismatch(
    store: Store, dataset_files: dict[str, Path], tmp_path: Path
) -> None:
    kwargs = stage_kwargs(store, _model(tmp_path), dataset_files, "t-config-digest")
    # The resolved config was edited after its digest was taken.
    kwargs["resolved_config_json"] = kwargs["resolved_config_json"].replace("12", "13")
    with pytest.raises(RegistryError) as info:
        _register(**kwargs)
    assert info.value.code == "CONFIG_DIGEST_MISMATCH"
    assert info.value.expected == kwargs["config_digest"]
    assert info.value.found == hashlib.sha256(kwargs["resolved_config_json"].encode()).hexdigest()


@pytest.mark.integration
def test_training_run_not_in_the_store(
    store: Store, dataset_files: dict[str, Path], tmp_path: Path
) -> None:
    kwargs = stage_kwargs(store, _model(tmp_path), dataset_files, "t-no-training-run")
    kwargs["training_run_id"] = "f" * 32
    with pytest.raises(RegistryError) as info:
        _register(**kwargs)
    assert info.value.code == "TRAINING_RUN_NOT_FOUND"
    assert "MLFLOW_TRACKING_URI" in info.value.message
    # Nothing was registered under the name.
    assert client_for(store.tracking_uri).search_model_versions("name = 't-no-training-run'") == []


@pytest.mark.integration
def test_artifact_store_failure_is_an_mlflow_error(
    store: Store, dataset_files: dict[str, Path], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    kwargs = stage_kwargs(store, _model(tmp_path), dataset_files, "t-artifact-store-broken",
                          experiment_name="t-artifact-store-broken")
    # Artifacts cannot be written below a regular file (NotADirectoryError, an OSError).
    kwargs["artifact_root"] = blocker / "artifacts"
    with pytest.raises(RegistryError) as info:
        _register(**kwargs)
    assert info.value.code == "MLFLOW_ERROR"
    assert "MLflow at" in info.value.message


# ---- URIs --------------------------------------------------------------------------------


@pytest.mark.integration
def test_model_uri_must_name_a_version_or_alias(store: Store) -> None:
    for uri in ("models:/shipyard-tiny", "models:/shipyard-tiny/latest", "runs:/abc/model",
                "shipyard-tiny@champion"):
        with pytest.raises(RegistryError) as info:
            verify_model(uri, tracking_uri=store.tracking_uri, policy=Policy(("x",)))
        assert info.value.code == "MODEL_URI_INVALID", uri
        assert info.value.check == "resolve"


@pytest.mark.integration
def test_artifact_uri_must_be_a_run_artifact(store: Store, tmp_path: Path) -> None:
    # verify_model wraps this into VERIFICATION_FAILED (check "download"); `download` is
    # where the code itself surfaces.
    client = client_for(store.tracking_uri)
    for uri in ("s3://bucket/model", "runs:/", "runs:/RUN", "runs://model"):
        with pytest.raises(RegistryError) as info:
            reg.download(client, uri, tmp_path / "out")
        assert info.value.code == "ARTIFACT_URI_INVALID", uri
    assert not (tmp_path / "out").exists()


# ---- keys --------------------------------------------------------------------------------


def _write_private(key_dir: Path, pem: bytes) -> None:
    key_dir.mkdir(parents=True, exist_ok=True)
    path = key_dir / "signing.key"
    path.write_bytes(pem)
    os.chmod(path, 0o600)


@pytest.mark.unit
def test_garbage_private_key_is_refused(tmp_path: Path) -> None:
    _write_private(tmp_path / "keys", b"not a key\n")
    with pytest.raises(RegistryError) as info:
        ensure_key_pair(tmp_path / "keys")
    assert info.value.code == "KEY_INVALID"
    assert "not a key" not in str(info.value)  # key bytes never end up in a message


@pytest.mark.unit
def test_non_ecdsa_private_key_is_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_private(tmp_path / "keys", pem)
    with pytest.raises(RegistryError) as info:
        ensure_key_pair(tmp_path / "keys")
    assert info.value.code == "KEY_INVALID"
    assert "P-256" in info.value.message


@pytest.mark.unit
def test_unreadable_public_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.pub"
    path.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(RegistryError) as info:
        public_key_fingerprint(path)
    assert info.value.code == "KEY_INVALID"
    with pytest.raises(RegistryError) as missing:
        public_key_fingerprint(tmp_path / "absent.pub")
    assert missing.value.code == "KEY_INVALID"


@pytest.mark.unit
def test_non_ecdsa_public_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.pub"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(RegistryError) as info:
        public_key_fingerprint(path)
    assert info.value.code == "KEY_INVALID"


# ---- signing configuration and trust roots -----------------------------------------------


@pytest.mark.unit
def test_sign_model_needs_exactly_one_signer(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        sign_model(_model(tmp_path), tmp_path / "model.sig")
    assert info.value.code == "SIGNING_CONFIG"


@pytest.mark.unit
def test_sign_statement_needs_a_signer(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        sign_statement({"_type": "x"}, tmp_path / "provenance.dsse.json")
    assert info.value.code == "SIGNING_CONFIG"
    assert not (tmp_path / "provenance.dsse.json").exists()


@pytest.mark.unit
def test_signature_check_needs_exactly_one_trust_root(tmp_path: Path) -> None:
    pair = ensure_key_pair(tmp_path / "keys")
    model_dir = _model(tmp_path)
    sign_model(model_dir, tmp_path / "model.sig", key_pair=pair)
    with pytest.raises(RegistryError) as info:
        verify_model_signature(model_dir, tmp_path / "model.sig")
    assert info.value.code == "TRUST_ROOT_REQUIRED"
    assert info.value.check == "model_signature"


@pytest.mark.unit
def test_provenance_check_needs_a_trust_root(tmp_path: Path) -> None:
    pair = ensure_key_pair(tmp_path / "keys")
    sign_statement({"_type": "x"}, tmp_path / "provenance.dsse.json", key_pair=pair)
    with pytest.raises(RegistryError) as info:
        verify_statement(tmp_path / "provenance.dsse.json")
    assert info.value.code == "TRUST_ROOT_REQUIRED"
    assert info.value.check == "provenance_signature"


@pytest.mark.unit
def test_model_changed_while_signing(tmp_path: Path) -> None:
    # The digest checked before signing is not the one signed: refuse, never attest.
    pair = ensure_key_pair(tmp_path / "keys")
    build = BuildInputs(
        config=RegisterConfig(), model_dir=_model(tmp_path), model_digest="00" * 32,
        dataset_digests={}, dataset_uris={}, config_digest="cd" * 32,
        resolved_config_json="{}", training_run_id=None, eval_report=None,
        execution_id="local:development:x", builder_id=prov.LOCAL_BUILDER_ID,
        started_on=datetime(2026, 1, 1, tzinfo=UTC),
        source=SourceInfo("https://github.com/o/r", "c" * 40, False),
        project_root=None, workflow_inputs=None, base_model_dir=None,
    )
    out_dir = tmp_path / "attestations"
    out_dir.mkdir()
    with pytest.raises(RegistryError) as info:
        write_attestations(out_dir, build, Signer("key", pair, None), "run-id")
    assert info.value.code == "SIGNING_FAILED"
    assert info.value.expected == "00" * 32
    assert not (out_dir / "provenance.dsse.json").exists()


@pytest.mark.unit
def test_provenance_timestamps_need_a_time_zone() -> None:
    record = prov.BuildRecord(
        subject_name="shipyard-tiny", model_digest="ab" * 32,
        builder_id=prov.LOCAL_BUILDER_ID, invocation_id="local:development:x",
        started_on=datetime(2026, 1, 1),  # naive: which 00:00?
        finished_on=datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
        external_parameters={}, internal_parameters={}, resolved_dependencies=[],
        byproducts=[],
    )
    with pytest.raises(RegistryError) as info:
        prov.build_statement(record)
    assert info.value.code == "PROVENANCE_INVALID"
    fixed = dataclasses.replace(record, started_on=datetime(2026, 1, 1, tzinfo=UTC))
    assert prov.build_statement(fixed)["predicate"]["runDetails"]["metadata"]["startedOn"] == (
        "2026-01-01T00:00:00Z")


@pytest.mark.integration
def test_alias_lookup_mlflow_refuses(store: Store) -> None:
    from registry.aliases import champion_version

    client = client_for(store.tracking_uri)
    assert champion_version(client, "t-never-registered") is None  # no model: no champion yet
    with pytest.raises(RegistryError) as info:
        champion_version(client, "team/shipyard")  # MLflow forbids '/' in model names
    assert info.value.code == "ALIAS_LOOKUP_FAILED"
