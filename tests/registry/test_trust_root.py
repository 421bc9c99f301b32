"""Issue #9, trust chain: verification trusts only what the policy pins (key fingerprints,
signing modes), the provenance binds the registered model name, the caller can demand a
digest, downloads are bounded, and a cluster never signs with a throwaway key."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import build_config, load_preset
from registry import cli as registry_cli
from registry import mlflow_registry as reg
from registry.cli import main
from registry.config import RegisterConfig
from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from registry.policy import (
    LOCAL_TRUST_POLICY_NAME,
    Policy,
    load_policy,
    pin_local_key,
    policy_from_dict,
)
from registry.signing import ensure_key_pair, public_key_fingerprint
from registry.stage import RegistrationResult
from registry.verify import VerificationResult, verify_model
from tests.registry.conftest import Store, register

LOCAL_BUILDER = ("urn:shipyard:builder:flyte-local",)


def _pinned(store: Store, **overrides: object) -> Policy:
    """A policy pinning the test key, as the local trust policy pins a generated one."""
    values: dict = {
        "allowed_builder_ids": LOCAL_BUILDER,
        "trusted_key_fingerprints": (f"sha256:{public_key_fingerprint(store.public_key)}",),
        **overrides,
    }
    return Policy(**values)


def _verify(store: Store, uri: str, policy: Policy, **kwargs: Any) -> VerificationResult:
    return verify_model(
        uri, tracking_uri=store.tracking_uri, policy=policy, public_key=store.public_key,
        **kwargs,
    )


@pytest.fixture
def registered(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> RegistrationResult:
    return register(store, model_copy, dataset_files, model_name)


def _check_of(failure: pytest.ExceptionInfo[RegistryError]) -> str | None:
    return failure.value.check


# ---- 1. --expected-digest ---------------------------------------------------------------


@pytest.mark.integration
def test_expected_digest_passes_when_equal_and_fails_with_its_check_otherwise(
    store: Store, registered: RegistrationResult
) -> None:
    result = _verify(store, registered.model_uri, _pinned(store),
                     expected_digest=f"sha256:{registered.model_digest}")
    assert ("expected_digest", "passed") in {(c.name, c.status) for c in result.checks}

    with pytest.raises(RegistryError) as failure:
        _verify(store, registered.model_uri, _pinned(store), expected_digest="0" * 64)
    assert _check_of(failure) == "expected_digest"
    assert failure.value.expected == f"sha256:{'0' * 64}"
    assert failure.value.found == f"sha256:{registered.model_digest}"


@pytest.mark.integration
def test_cli_expected_digest_mismatch_exits_1_naming_the_check(
    store: Store, registered: RegistrationResult, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["verify", registered.model_uri, "--tracking-uri", store.tracking_uri,
            "--public-key", str(store.public_key),
            "--policy", str(store.key_dir / LOCAL_TRUST_POLICY_NAME)]
    assert main([*args, "--expected-digest", f"sha256:{registered.model_digest}"]) == 0
    assert "[passed] expected_digest" in capsys.readouterr().out
    assert main([*args, "--expected-digest", "sha256:" + "a" * 64]) == 1
    err = capsys.readouterr().err
    assert "check:    expected_digest" in err and "code:     VERIFICATION_FAILED" in err


@pytest.mark.integration
def test_malformed_expected_digest_is_a_usage_error(
    store: Store, registered: RegistrationResult, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered.model_uri, _pinned(store), expected_digest="sha256:xyz")
    assert failure.value.code == "EXPECTED_DIGEST_INVALID"
    code = main(["verify", registered.model_uri, "--tracking-uri", store.tracking_uri,
                 "--expected-digest", "latest"])
    assert code == 2
    assert "EXPECTED_DIGEST_INVALID" in capsys.readouterr().err


# ---- 2. the provenance binds the registered model name -----------------------------------


@pytest.mark.integration
def test_a_model_signed_for_another_name_is_refused_under_this_one(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    original = register(store, model_copy, dataset_files, model_name)
    client = client_for(store.tracking_uri)
    version = client.get_model_version(original.registered_model_name, original.version)
    # An attacker with registry write access copies the validly signed version, files and
    # attestations, under another name.
    other = f"{model_name}-impostor"
    client.create_registered_model(other)
    copied = client.create_model_version(
        name=other, source=str(version.source), run_id=version.run_id, tags=dict(version.tags)
    )
    with pytest.raises(RegistryError) as failure:
        _verify(store, f"models:/{other}/{copied.version}", _pinned(store))
    assert _check_of(failure) == "provenance_model_name"
    assert failure.value.expected == other
    assert failure.value.found == model_name
    # the original still verifies, and says which name it is bound to
    checks = {c.name: c for c in _verify(store, original.model_uri, _pinned(store)).checks}
    assert checks["provenance_model_name"].detail == model_name


# ---- 3. the policy pins keys and signing modes; no tag decides them ----------------------


@pytest.mark.integration
def test_a_key_the_policy_does_not_pin_is_refused(
    store: Store, registered: RegistrationResult
) -> None:
    policy = _pinned(store, trusted_key_fingerprints=("sha256:" + "b" * 64,))
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered.model_uri, policy)
    assert _check_of(failure) == "policy_trusted_key"
    assert failure.value.found == f"sha256:{public_key_fingerprint(store.public_key)}"
    assert "trusted_key_fingerprints" in failure.value.message


@pytest.mark.integration
def test_the_public_key_next_to_the_private_key_is_no_trust_root_by_itself(
    store: Store, registered: RegistrationResult
) -> None:
    # The packaged default policy pins no key: the key file in key_dir alone verifies nothing.
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered.model_uri, load_policy())
    assert _check_of(failure) == "policy_trusted_key"


@pytest.mark.integration
def test_a_signing_mode_the_policy_does_not_allow_is_refused(
    store: Store, registered: RegistrationResult
) -> None:
    policy = _pinned(
        store,
        allowed_signing_modes=("sigstore",),
        sigstore_identity="https://github.com/o/r/.github/workflows/main.yml@refs/heads/main",
        sigstore_oidc_issuer="https://token.actions.githubusercontent.com",
    )
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered.model_uri, policy)
    assert _check_of(failure) == "policy_signing_mode"
    assert failure.value.found == "key"


@pytest.mark.integration
def test_the_signing_mode_tag_does_not_choose_the_trust_root(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    result = register(store, model_copy, dataset_files, model_name)
    client = client_for(store.tracking_uri)
    client.set_model_version_tag(model_name, result.version, reg.TAG_SIGNING_MODE, "sigstore")
    with pytest.raises(RegistryError) as failure:
        _verify(store, result.model_uri, _pinned(store))
    # the mode comes from the signature (key); the tag claiming otherwise is caught
    assert _check_of(failure) == "mlflow_tag"
    assert (failure.value.expected, failure.value.found) == ("key", "sigstore")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"trusted_key_fingerprints": ["abc"]}, "sha256:<64 lowercase hex>"),
        ({"allowed_signing_modes": ["gpg"]}, "allowed_signing_modes"),
        ({"allowed_signing_modes": []}, "allowed_signing_modes"),
        ({"max_model_bytes": 0}, "max_model_bytes"),
        ({"max_model_bytes": "50GiB"}, "max_model_bytes"),
    ],
)
def test_trust_policy_mistakes_are_errors(raw: dict, fragment: str) -> None:
    with pytest.raises(RegistryError) as failure:
        policy_from_dict({"allowed_builder_ids": list(LOCAL_BUILDER), **raw})
    assert failure.value.code == "POLICY_INVALID"
    assert fragment in failure.value.message


# ---- 4. the local key pair is pinned explicitly, on first use ----------------------------


@pytest.mark.unit
def test_generating_a_key_pair_pins_it_in_a_private_local_trust_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair = ensure_key_pair(tmp_path / "keys")
    fingerprint = f"sha256:{pair.fingerprint}"
    trust = tmp_path / "keys" / LOCAL_TRUST_POLICY_NAME
    assert stat.S_IMODE(trust.stat().st_mode) == 0o600
    assert fingerprint in capsys.readouterr().out  # printed for the user to check and share
    policy = load_policy(keys_dir=tmp_path / "keys")
    assert policy.source == str(trust)
    assert policy.trusted_key_fingerprints == (fingerprint,)
    assert policy.allowed_signing_modes == ("key",) and policy.required_eval_gate == "PASS"
    # loading again changes nothing
    ensure_key_pair(tmp_path / "keys")
    assert load_policy(keys_dir=tmp_path / "keys").trusted_key_fingerprints == (fingerprint,)


@pytest.mark.unit
def test_a_new_key_is_never_pinned_behind_a_policy_that_trusts_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19: the policy used to extend itself whenever a key was generated, so deleting
    signing.key made the next registration mint and trust a new key silently."""
    keys = tmp_path / "keys"
    first = f"sha256:{ensure_key_pair(keys).fingerprint}"
    capsys.readouterr()
    (keys / "signing.key").unlink()
    second = f"sha256:{ensure_key_pair(keys).fingerprint}"
    assert load_policy(keys_dir=keys).trusted_key_fingerprints == (first,)
    warning = capsys.readouterr().out
    assert "was NOT extended" in warning and second in warning and "pin-key" in warning
    # the explicit step pins it
    assert registry_cli.main(["pin-key", "--keys-dir", str(keys)]) == 0
    assert load_policy(keys_dir=keys).trusted_key_fingerprints == (first, second)
    # a key that merely appears in key_dir (not generated here) is not pinned either
    (keys / "signing.key").unlink()
    ensure_key_pair(tmp_path / "elsewhere")
    os.link(tmp_path / "elsewhere" / "signing.key", keys / "signing.key")
    found = f"sha256:{ensure_key_pair(keys).fingerprint}"
    assert found not in load_policy(keys_dir=keys).trusted_key_fingerprints


@pytest.mark.unit
def test_pinning_keeps_a_policy_that_allowed_only_sigstore_valid(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / LOCAL_TRUST_POLICY_NAME).write_text(yaml.safe_dump({
        "allowed_builder_ids": list(LOCAL_BUILDER), "allowed_signing_modes": ["sigstore"],
        "sigstore_identity": "id", "sigstore_oidc_issuer": "issuer"}))
    pin_local_key(keys, "sha256:" + "c" * 64)
    policy = load_policy(keys_dir=keys)
    assert policy.allowed_signing_modes == ("sigstore", "key")
    assert policy.trusted_key_fingerprints == ("sha256:" + "c" * 64,)


# ---- 5. a cluster never generates a throwaway key ----------------------------------------


@pytest.mark.unit
def test_without_key_generation_a_missing_key_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(RegistryError) as failure:
        ensure_key_pair(tmp_path / "keys", allow_generation=False)
    assert failure.value.code == "KEY_GENERATION_DISABLED"
    assert "signing_mode='sigstore'" in failure.value.message
    assert not (tmp_path / "keys").exists()


@pytest.mark.integration
def test_a_registration_without_key_generation_and_without_a_key_fails_before_mlflow(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str,
    tmp_path: Path,
) -> None:
    with pytest.raises(RegistryError) as failure:
        register(store, model_copy, dataset_files, model_name,
                 key_dir=str(tmp_path / "mounted-secret"), allow_key_generation=False)
    assert failure.value.code == "KEY_GENERATION_DISABLED"
    assert client_for(store.tracking_uri).search_model_versions(f"name = '{model_name}'") == []


@pytest.mark.integration
def test_a_mounted_key_signs_without_key_generation(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str,
) -> None:
    # the store's key pair stands in for a mounted secret
    result = register(store, model_copy, dataset_files, model_name,
                      key_dir=str(store.key_dir), allow_key_generation=False)
    assert result.signer == f"sha256:{public_key_fingerprint(store.public_key)}"


# ---- 6. downloads are bounded ------------------------------------------------------------


@pytest.mark.integration
def test_a_version_larger_than_max_model_bytes_is_refused_before_download(
    store: Store, registered: RegistrationResult, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError) as failure:
        _verify(store, registered.model_uri, _pinned(store, max_model_bytes=1024),
                download_dir=tmp_path / "dl")
    assert _check_of(failure) == "download_size"
    assert failure.value.expected == "<= 1024 bytes"
    assert not (tmp_path / "dl").exists() or not any((tmp_path / "dl").iterdir())
    passed = _verify(store, registered.model_uri, _pinned(store)).checks
    assert any(c.name == "download_size" and c.status == "passed" for c in passed)


# ---- 7. an eval gate with nothing to check does not pass the policy -----------------------


@pytest.mark.integration
def test_no_evidence_gate_is_refused_by_required_eval_gate_pass(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    result = register(store, model_copy, dataset_files, model_name,
                      eval_report={"gate_outcome": "NO_EVIDENCE", "summary": {}})
    with pytest.raises(RegistryError) as failure:
        _verify(store, result.model_uri,
                dataclasses.replace(_pinned(store), required_eval_gate="PASS"))
    assert _check_of(failure) == "policy_eval_gate"
    assert (failure.value.expected, failure.value.found) == ("PASS", "NO_EVIDENCE")


@pytest.mark.unit
@pytest.mark.parametrize("preset", ["gpu-1x", "gpu-8x"])
def test_cluster_presets_never_generate_a_signing_key(preset: str) -> None:
    config = build_config(RegisterConfig, "register", load_preset(preset).get("register", {}))
    assert config.allow_key_generation is False
