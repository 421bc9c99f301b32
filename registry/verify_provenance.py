"""What the signed provenance says about the model (registry/verify.py): that it is about
these bytes and this registered name, that its byproducts (SBOM, eval report, eval
attestation) are the files logged beside it, and that its builder and source repository
are the policy's. Checks: provenance_signature, provenance_format, provenance_subject,
provenance_model_name, byproduct_digest, policy_builder, policy_source_repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.digests import sha256_file
from registry import provenance as prov
from registry.dsse import verify_statement
from registry.errors import RegistryError
from registry.policy import Policy
from registry.verify_checks import CheckOutcome, VerifyRequest, require
from registry.verify_signature import TrustRoot


def check_provenance(
    path: Path, trust: TrustRoot, digest: str, request: VerifyRequest, version_name: str,
    checks: list[CheckOutcome],
) -> dict[str, Any]:
    """The provenance statement, verified with the trusted signer and about this model."""
    statement = verify_statement(path, public_key_path=trust[0], sigstore=trust[1])
    checks.append(CheckOutcome("provenance_signature", "passed", path.name))
    prov.check_format(statement)
    checks.append(CheckOutcome("provenance_format", "passed", prov.PREDICATE_TYPE))
    subject = prov.subject_digest(statement)
    require(
        "provenance_subject",
        subject == digest,
        f"sha256:{digest}",
        f"sha256:{subject}",
        "provenance subject digest",
    )
    checks.append(CheckOutcome("provenance_subject", "passed", f"sha256:{digest}"))
    checks.append(_check_model_name(statement, request.name, version_name))
    return statement


def _check_model_name(statement: dict[str, Any], uri_name: str, version_name: str) -> CheckOutcome:
    signed_name = prov.subject_name(statement)
    if signed_name != uri_name or signed_name != version_name:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"the provenance was signed for registered model {signed_name!r}, not "
            f"{uri_name!r}: a model signed under another name was registered under this one. "
            "Register the model under its own name (a new signed registration).",
            check="provenance_model_name",
            expected=uri_name,
            found=signed_name,
        )
    return CheckOutcome("provenance_model_name", "passed", signed_name)


def check_byproducts(statement: dict[str, Any], attest_dir: Path) -> CheckOutcome:
    checked = []
    for item in prov.byproducts(statement):
        name, expected = item.get("name"), (item.get("digest") or {}).get("sha256")
        if not name or not expected:
            continue
        path = attest_dir / name
        found = sha256_file(path) if path.is_file() else "missing"
        require("byproduct_digest", found == expected, expected, found, f"byproduct {name}")
        checked.append(name)
    return CheckOutcome("byproduct_digest", "passed", ", ".join(checked) or "none recorded")


def check_policy(statement: dict[str, Any], policy: Policy) -> list[CheckOutcome]:
    outcomes = []
    builder = prov.builder_id(statement)
    if builder not in policy.allowed_builder_ids:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"builder is not allowed by policy {policy.source}",
            check="policy_builder",
            expected=f"one of {list(policy.allowed_builder_ids)}",
            found=builder,
        )
    outcomes.append(CheckOutcome("policy_builder", "passed", builder))

    repository = prov.source_repository(statement)
    if policy.expected_source_repository is None:
        outcomes.append(CheckOutcome("policy_source_repository", "skipped", "not required"))
    else:
        require(
            "policy_source_repository",
            _same_repository(repository, policy.expected_source_repository),
            policy.expected_source_repository,
            repository,
            "source repository",
        )
        outcomes.append(CheckOutcome("policy_source_repository", "passed", str(repository)))
    return outcomes


def _same_repository(found: str | None, expected: str) -> bool:
    def norm(url: str) -> str:
        return url.rstrip("/").removesuffix(".git").lower()

    return found is not None and norm(found) == norm(expected)
