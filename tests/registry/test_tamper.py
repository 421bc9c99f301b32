"""Fail-closed verification: each way of tampering with a registered model fails with the
check that names it, and says what was expected versus found.

The tampering is done the way an attacker with write access to the artifact store or the
registry would: by editing the stored files and tags, not by calling our code differently.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from registry.policy import Policy
from registry.signing import KeyPair, ensure_key_pair, public_key_fingerprint, sign_model
from registry.stage import RegistrationResult
from registry.verify import verify_model
from tests.registry.conftest import Store, register, run_artifacts_dir

pytestmark = pytest.mark.integration

LOCAL_POLICY = Policy(allowed_builder_ids=("urn:shipyard:builder:flyte-local",))


def _verify(store: Store, result: RegistrationResult, policy: Policy = LOCAL_POLICY) -> None:
    # The policy pins the test key, as the local trust policy pins a generated one.
    pinned = f"sha256:{public_key_fingerprint(store.public_key)}"
    verify_model(
        result.model_uri,
        tracking_uri=store.tracking_uri,
        policy=dataclasses.replace(policy, trusted_key_fingerprints=(pinned,)),
        public_key=store.public_key,
    )


def _attestations(store: Store, result: RegistrationResult) -> Path:
    return run_artifacts_dir(store, result.mlflow_run_id) / "attestations"


def _model_files(store: Store, result: RegistrationResult) -> Path:
    return run_artifacts_dir(store, result.mlflow_run_id) / "model"


def _statement(store: Store, result: RegistrationResult) -> dict:
    envelope = json.loads((_attestations(store, result) / "provenance.dsse.json").read_text())
    return json.loads(base64.b64decode(envelope["payload"]))


def _write_provenance(store: Store, result: RegistrationResult, statement: dict, key: Path) -> None:
    """Replace the stored provenance with `statement`, validly signed by the key at `key`."""
    private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    envelope = Envelope(
        payload=json.dumps(statement).encode(),
        payload_type="application/vnd.in-toto+json",
        signatures={},
    )
    envelope.sign(CryptoSigner(private_key))
    path = _attestations(store, result) / "provenance.dsse.json"
    path.write_text(json.dumps(envelope.to_dict()))


@pytest.fixture
def other_key(tmp_path: Path) -> Path:
    """An attacker's key pair: valid ECDSA P-256, just not the trusted one."""
    return ensure_key_pair(tmp_path / "attacker-keys").private_key_path


@pytest.fixture
def registered(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> RegistrationResult:
    result = register(
        store, model_copy, dataset_files, model_name, eval_report={"gate_outcome": "PASS"}
    )
    _verify(store, result)  # sound before the tampering
    return result


def _modify_weight(store: Store, result: RegistrationResult, _: Path) -> None:
    weights = _model_files(store, result) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))


def _add_file(store: Store, result: RegistrationResult, _: Path) -> None:
    (_model_files(store, result) / "extra_weights.bin").write_bytes(b"\0" * 16)


def _remove_file(store: Store, result: RegistrationResult, _: Path) -> None:
    (_model_files(store, result) / "generation_config.json").unlink()


def _edit_provenance_payload(store: Store, result: RegistrationResult, _: Path) -> None:
    path = _attestations(store, result) / "provenance.dsse.json"
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["runDetails"]["builder"]["id"] = "urn:attacker:builder"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope))  # the old signature stays


def _model_signed_by_other_key(store: Store, result: RegistrationResult, key: Path) -> None:
    pair = KeyPair(private_key_path=key, public_key_path=key.with_name("signing.pub"))
    sign_model(
        _model_files(store, result), _attestations(store, result) / "model.sig", key_pair=pair
    )


def _provenance_signed_by_other_key(store: Store, result: RegistrationResult, key: Path) -> None:
    _write_provenance(store, result, _statement(store, result), key)


def _subject_of_another_artifact(store: Store, result: RegistrationResult, _: Path) -> None:
    # A validly signed provenance, about some other model: e.g. copied from another version.
    statement = _statement(store, result)
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    _write_provenance(store, result, statement, store.private_key)


def _tag_points_at_other_digest(store: Store, result: RegistrationResult, _: Path) -> None:
    client_for(store.tracking_uri).set_model_version_tag(
        result.registered_model_name, result.version, "model_digest", "f" * 64
    )


TAMPERS: dict[str, tuple[Callable[[Store, RegistrationResult, Path], None], str]] = {
    "weight-file-modified": (_modify_weight, "model_signature"),
    "file-added": (_add_file, "model_signature"),
    "file-removed": (_remove_file, "model_signature"),
    "provenance-payload-edited": (_edit_provenance_payload, "provenance_signature"),
    "model-signed-by-another-key": (_model_signed_by_other_key, "model_signature"),
    "provenance-signed-by-another-key": (_provenance_signed_by_other_key, "provenance_signature"),
    "subject-digest-mismatch": (_subject_of_another_artifact, "provenance_subject"),
    "mlflow-tag-edited": (_tag_points_at_other_digest, "mlflow_tag"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampering_fails_the_named_check(
    store: Store, registered: RegistrationResult, other_key: Path, tamper: str
) -> None:
    change, check = TAMPERS[tamper]
    change(store, registered, other_key)
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered)
    assert failure.value.code == "VERIFICATION_FAILED"
    assert failure.value.check == check
    assert failure.value.expected is not None and failure.value.found is not None
    assert failure.value.expected != failure.value.found
    assert f"check {check!r} failed" in str(failure.value)


def test_weight_tamper_names_the_file(store: Store, registered: RegistrationResult) -> None:
    _modify_weight(store, registered, Path())
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered)
    assert "model.safetensors" in failure.value.message
    assert failure.value.expected == f"sha256:{registered.model_digest}"


def test_another_key_is_reported_by_fingerprint(
    store: Store, registered: RegistrationResult, other_key: Path
) -> None:
    _model_signed_by_other_key(store, registered, other_key)
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered)
    assert failure.value.expected == f"key sha256:{public_key_fingerprint(store.public_key)}"
    attacker = public_key_fingerprint(other_key.with_name("signing.pub"))
    assert failure.value.found == f"key sha256:{attacker}"


def test_tag_pointing_at_another_versions_provenance_fails(
    store: Store, registered: RegistrationResult, model_copy: Path, dataset_files: dict[str, Path]
) -> None:
    (model_copy / "README.md").write_text("another model\n")
    other = register(store, model_copy, dataset_files, registered.registered_model_name)
    client_for(store.tracking_uri).set_model_version_tag(
        registered.registered_model_name, registered.version, "provenance_uri", other.provenance_uri
    )
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered)
    assert failure.value.check == "mlflow_tag"
    assert failure.value.found == other.provenance_uri


def test_builder_outside_the_policy_fails(store: Store, registered: RegistrationResult) -> None:
    policy = Policy(allowed_builder_ids=("https://github.com/o/r/.github/workflows/main.yml",))
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered, policy)
    assert failure.value.check == "policy_builder"
    assert failure.value.found == "urn:shipyard:builder:flyte-local"


def test_source_repository_outside_the_policy_fails(
    store: Store, registered: RegistrationResult
) -> None:
    policy = Policy(
        allowed_builder_ids=LOCAL_POLICY.allowed_builder_ids,
        expected_source_repository="https://github.com/someone-else/shipyard",
    )
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered, policy)
    assert failure.value.check == "policy_source_repository"
    assert failure.value.found == registered.source_repository


def test_required_eval_gate_is_enforced(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    failed_eval = register(
        store, model_copy, dataset_files, model_name, eval_report={"gate_outcome": "FAIL"}
    )
    policy = Policy(allowed_builder_ids=LOCAL_POLICY.allowed_builder_ids, required_eval_gate="PASS")
    with pytest.raises(RegistryError) as failure:
        _verify(store, failed_eval, policy)
    assert failure.value.check == "policy_eval_gate"
    assert (failure.value.expected, failure.value.found) == ("PASS", "FAIL")


def test_no_trusted_key_means_no_verification(store: Store, registered: RegistrationResult) -> None:
    with pytest.raises(RegistryError) as failure:
        verify_model(
            registered.model_uri,
            tracking_uri=store.tracking_uri,
            policy=LOCAL_POLICY,
            public_key=None,
        )
    assert failure.value.check == "trust_root"


def test_unknown_model_uri_fails_to_resolve(store: Store) -> None:
    with pytest.raises(RegistryError) as failure:
        verify_model(
            "models:/no-such-model@challenger",
            tracking_uri=store.tracking_uri,
            policy=LOCAL_POLICY,
            public_key=store.public_key,
        )
    assert failure.value.check == "resolve"


def test_reregistering_over_a_tampered_version_fails_instead_of_blessing_it(
    store: Store, registered: RegistrationResult, model_copy: Path, dataset_files: dict[str, Path]
) -> None:
    client = client_for(store.tracking_uri)
    client.delete_registered_model_alias(registered.registered_model_name, "challenger")
    _modify_weight(store, registered, Path())
    with pytest.raises(RegistryError) as failure:
        register(store, model_copy, dataset_files, registered.registered_model_name)
    assert failure.value.code == "SELF_CHECK_FAILED"
    assert failure.value.check == "model_signature"
    versions = client.search_model_versions(f"name = '{registered.registered_model_name}'")
    assert [str(v.version) for v in versions] == ["1"]  # no second version for one digest
    assert "challenger" not in client.get_registered_model(registered.registered_model_name).aliases
