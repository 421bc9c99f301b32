"""Plain functions of the registry: config and policy validation, keys, SBOM, source info,
provenance statements and their DSSE envelopes. No MLflow."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry import provenance as prov
from registry.config import RegisterConfig
from registry.dsse import sign_statement, verify_statement
from registry.errors import RegistryError
from registry.policy import DEFAULT_POLICY_PATH, load_policy, policy_from_dict
from registry.sbom import environment_sbom, pypi_purl
from registry.signing import ambient_identity_token, ensure_key_pair
from registry.source import source_info

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"signing_mode": "gpg"}, "signing_mode"),
        ({"signing_mode": "sigstore"}, "sigstore_identity"),
        ({"registered_model_name": " "}, "registered_model_name"),
        ({"container_image": "ghcr.io/o/shipyard:latest"}, "by digest"),
    ],
)
def test_register_config_rejects_bad_values_early(overrides: dict, fragment: str) -> None:
    with pytest.raises(RegistryError) as failure:
        RegisterConfig(**overrides)
    assert failure.value.code == "CONFIG_INVALID"
    assert fragment in failure.value.message


def test_default_policy_trusts_the_local_builder_only() -> None:
    policy = load_policy()
    assert policy.allowed_builder_ids == (prov.LOCAL_BUILDER_ID,)
    assert policy.required_eval_gate == "PASS" and policy.sigstore is None
    assert policy.source == str(DEFAULT_POLICY_PATH)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"allowed_builder_ids": ["b"], "required_eval_gates": "PASS"}, "unknown key"),
        ({"allowed_builder_ids": []}, "at least one builder"),
        ({"allowed_builder_ids": ["b"], "required_eval_gate": "MAYBE"}, "required_eval_gate"),
        ({"allowed_builder_ids": ["b"], "sigstore_identity": "x"}, "sigstore_oidc_issuer"),
    ],
)
def test_policy_mistakes_are_errors_not_silently_weaker_checks(raw: dict, fragment: str) -> None:
    with pytest.raises(RegistryError) as failure:
        policy_from_dict(raw)
    assert failure.value.code == "POLICY_INVALID"
    assert fragment in failure.value.message


def test_key_pair_is_generated_once_with_private_permissions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = ensure_key_pair(tmp_path / "keys")
    assert stat.S_IMODE(first.private_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.private_key_path.parent.stat().st_mode) == 0o700
    assert str(first.private_key_path) in capsys.readouterr().out
    again = ensure_key_pair(tmp_path / "keys")
    assert again.fingerprint == first.fingerprint
    assert "generated" not in capsys.readouterr().out


def test_a_readable_private_key_is_refused(tmp_path: Path) -> None:
    pair = ensure_key_pair(tmp_path / "keys")
    os.chmod(pair.private_key_path, 0o644)
    with pytest.raises(RegistryError) as failure:
        ensure_key_pair(tmp_path / "keys")
    assert failure.value.code == "KEY_PERMISSIONS"
    assert "chmod 600" in failure.value.message


def test_sigstore_mode_without_an_oidc_identity_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "GITHUB_ACTIONS",
        "GOOGLE_SERVICE_ACCOUNT_NAME",
        "BUILDKITE",
        "GITLAB_CI",
        "CIRCLECI",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RegistryError) as failure:
        ambient_identity_token()
    assert failure.value.code == "SIGSTORE_NO_IDENTITY"
    assert "id-token: write" in failure.value.message


def test_sbom_is_cyclonedx_with_pypi_purls() -> None:
    sbom = environment_sbom()
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    purls = [c["purl"] for c in sbom["components"]]
    assert len(purls) == len(set(purls))
    by_name = {c["name"].lower(): c for c in sbom["components"]}
    assert by_name["mlflow"]["purl"].startswith("pkg:pypi/mlflow@")
    assert by_name["model-signing"]["purl"].startswith("pkg:pypi/model-signing@")
    # A local version label is percent-encoded, as the purl spec requires.
    assert pypi_purl("torch", "2.13.0+cpu") == "pkg:pypi/torch@2.13.0%2Bcpu"
    assert pypi_purl("Foo_Bar.baz", "1") == "pkg:pypi/foo-bar-baz@1"


def test_source_info_reads_commit_and_dirty_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()

    clean = source_info(repo)
    assert (clean.commit, clean.dirty, clean.repository) == (commit, False, repo.as_uri())
    (repo / "a.txt").write_text("changed")
    assert source_info(repo, "https://github.com/o/r").dirty is True
    assert source_info(repo, "https://github.com/o/r").repository == "https://github.com/o/r"
    assert source_info(tmp_path / "not-a-repo").commit == "unknown"


def _record(**changes: object) -> prov.BuildRecord:
    values: dict = {
        "subject_name": "shipyard-tiny",
        "model_digest": "ab" * 32,
        "builder_id": prov.LOCAL_BUILDER_ID,
        "invocation_id": "local:development:x",
        "started_on": datetime(2026, 1, 1, tzinfo=UTC),
        "finished_on": datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
        "external_parameters": {"train_config": {"max_steps": 1}},
        "internal_parameters": {"config_digest": "cd" * 32},
        "resolved_dependencies": [
            prov.source_dependency("https://github.com/o/r", "c" * 40, False)
        ],
        "byproducts": [prov.ResourceDescriptor("sbom.cdx.json", digest={"sha256": "ef" * 32})],
    }
    values.update(changes)
    return prov.BuildRecord(**values)


def test_statement_is_slsa_v1_with_readable_fields() -> None:
    statement = prov.build_statement(_record())
    prov.check_format(statement)
    assert statement["predicate"]["runDetails"]["metadata"] == {
        "invocationId": "local:development:x",
        "startedOn": "2026-01-01T00:00:00Z",
        "finishedOn": "2026-01-01T00:05:00Z",
    }
    assert prov.subject_digest(statement) == "ab" * 32
    assert prov.source_repository(statement) == "https://github.com/o/r"
    assert prov.eval_gate_outcome(statement) is None


@pytest.mark.parametrize(
    ("execution_id", "builder"),
    [
        ("local:development:abc", prov.LOCAL_BUILDER_ID),
        ("none:none:none", prov.LOCAL_BUILDER_ID),
        ("shipyard:production:f8a2", "urn:shipyard:builder:flyte:shipyard:production"),
    ],
)
def test_default_builder_id_names_the_flyte_project_and_domain(
    execution_id: str, builder: str
) -> None:
    assert prov.default_builder_id(execution_id) == builder


def test_dsse_round_trip_and_tampered_payload(tmp_path: Path) -> None:
    pair = ensure_key_pair(tmp_path / "keys")
    statement = prov.build_statement(_record())
    envelope_path = tmp_path / "provenance.dsse.json"
    sign_statement(statement, envelope_path, key_pair=pair)
    assert verify_statement(envelope_path, public_key_path=pair.public_key_path) == statement

    envelope = json.loads(envelope_path.read_text())
    envelope["payloadType"] = "text/plain"
    envelope_path.write_text(json.dumps(envelope))
    with pytest.raises(RegistryError) as failure:
        verify_statement(envelope_path, public_key_path=pair.public_key_path)
    assert failure.value.check == "provenance_signature"
    assert failure.value.found == "text/plain"


def test_a_statement_that_is_not_slsa_provenance_is_rejected() -> None:
    statement = prov.build_statement(_record())
    statement["predicateType"] = "https://model_signing/signature/v1.0"
    with pytest.raises(RegistryError) as failure:
        prov.check_format(statement)
    assert failure.value.check == "provenance_format"
