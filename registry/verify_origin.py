"""Where the model comes from (registry/verify.py): an imported model (import buildType,
registry/imports.py) only from a source the policy allows, and the base model (a fine-tune's
`base_model` dependency, or the imported model itself) one the policy allows. Checks:
policy_imported_model, policy_base_model.
"""

from __future__ import annotations

from typing import Any

from registry import provenance as prov
from registry.base_model import BaseModelRef, base_from_statement
from registry.errors import RegistryError
from registry.policy import Policy
from registry.verify_checks import CheckOutcome


def check_origin(
    statement: dict[str, Any], imported: bool, policy: Policy, checks: list[CheckOutcome]
) -> BaseModelRef | None:
    """The signed base model identity, once the import source and the base are allowed."""
    base = _signed_base(statement)
    checks.append(_check_imported(statement, policy))
    checks.append(_check_base_model(base, imported, policy))
    return base


def _signed_base(statement: dict[str, Any]) -> BaseModelRef | None:
    try:
        return base_from_statement(statement)
    except RegistryError as exc:  # a signed but malformed base identity
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"the provenance's base model is malformed: {exc.message}",
            check=prov.CHECK_PROVENANCE_FORMAT,
            expected="a base model identity",
            found="malformed",
        ) from exc


def _check_imported(statement: dict[str, Any], policy: Policy) -> CheckOutcome:
    if not prov.is_imported(statement):
        return CheckOutcome("policy_imported_model", "skipped", "built by Shipyard, not imported")
    source = prov.import_source(statement)
    if source not in policy.allowed_import_sources:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"this version is a base model imported as it is from {source!r}, not trained or "
            f"gated by Shipyard, and policy {policy.source} does not allow imports from that "
            "source. If you trust the model as it was published, add the source to the "
            f"policy's allowed_import_sources (e.g. `allowed_import_sources: [{source}]` in "
            "$SHIPYARD_HOME/keys/trust-policy.yaml); otherwise move the alias to a trained "
            "version.",
            check="policy_imported_model",
            expected=f"a source in {list(policy.allowed_import_sources)}",
            found=str(source),
        )
    return CheckOutcome("policy_imported_model", "passed", f"imported from {source}")


def _check_base_model(
    base: BaseModelRef | None, imported: bool, policy: Policy
) -> CheckOutcome:
    described = "none recorded" if base is None else f"sha256:{base.model_digest} ({base.source})"
    if policy.allowed_base_models is None:
        return CheckOutcome("policy_base_model", "skipped", f"any base allowed: {described}")
    found = None if base is None else f"sha256:{base.model_digest}"
    if found not in policy.allowed_base_models:
        what = "the imported model" if imported else "the model's base model"
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{what} ({described}) is not one policy {policy.source} allows: the provenance "
            "must name a base listed in allowed_base_models. Train from an allowed base, or "
            "add this digest to allowed_base_models if you trust it.",
            check="policy_base_model",
            expected=f"one of {list(policy.allowed_base_models)}",
            found=str(found),
        )
    return CheckOutcome("policy_base_model", "passed", described)
