"""Verification policy: which builders, source and eval outcome a deployable model needs.

A policy is a YAML file; unknown keys are errors, so a typo cannot silently switch a check
off. A key left out (or null) means that requirement is not enforced, and the verification
result says so.

    allowed_builder_ids: [urn:shipyard:builder:flyte-local]   # required, non-empty
    expected_source_repository: https://github.com/ORG/REPO   # or null
    required_eval_gate: PASS                                  # or null (until Eval lands)
    sigstore_identity: https://github.com/ORG/REPO/.github/workflows/main.yml@refs/heads/main
    sigstore_oidc_issuer: https://token.actions.githubusercontent.com
    sigstore_staging: false
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from registry.errors import RegistryError
from registry.signing import SigstoreIdentity

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")
EVAL_GATE_OUTCOMES = ("PASS",)


@dataclass(frozen=True)
class Policy:
    # Builders trusted to produce deployable models (SLSA runDetails.builder.id, exact match).
    allowed_builder_ids: tuple[str, ...]
    # Repository the source dependency must come from; None: not enforced.
    expected_source_repository: str | None = None
    # Eval gate outcome the provenance must record; None: not enforced.
    required_eval_gate: str | None = None
    # Keyless signatures must come from this OIDC identity and issuer (sigstore mode).
    sigstore_identity: str | None = None
    sigstore_oidc_issuer: str | None = None
    sigstore_staging: bool = False
    # Where the policy was read from, for messages.
    source: str = field(default="<inline>", compare=False)

    def __post_init__(self) -> None:
        for name in ("expected_source_repository", "sigstore_identity", "sigstore_oidc_issuer"):
            if not isinstance(getattr(self, name), str | None):
                raise RegistryError(
                    "POLICY_INVALID", f"policy {self.source}: {name} must be a string or null."
                )
        if not isinstance(self.sigstore_staging, bool):
            raise RegistryError(
                "POLICY_INVALID", f"policy {self.source}: sigstore_staging must be true or false."
            )
        if not self.allowed_builder_ids or not all(
            isinstance(b, str) and b for b in self.allowed_builder_ids
        ):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: allowed_builder_ids must list at least one builder id "
                "(e.g. urn:shipyard:builder:flyte-local).",
            )
        if self.required_eval_gate not in (None, *EVAL_GATE_OUTCOMES):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: required_eval_gate={self.required_eval_gate!r}: "
                f"use one of {list(EVAL_GATE_OUTCOMES)} or null.",
            )
        if (self.sigstore_identity is None) != (self.sigstore_oidc_issuer is None):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: set both sigstore_identity and sigstore_oidc_issuer, "
                "or neither.",
            )

    @property
    def sigstore(self) -> SigstoreIdentity | None:
        if self.sigstore_identity is None or self.sigstore_oidc_issuer is None:
            return None
        return SigstoreIdentity(
            self.sigstore_identity, self.sigstore_oidc_issuer, self.sigstore_staging
        )


def load_policy(path: Path | str | None = None) -> Policy:
    """Read a policy file; None reads the default policy shipped with the package."""
    policy_path = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        raw = yaml.safe_load(policy_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError("POLICY_INVALID", f"cannot read policy {policy_path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise RegistryError("POLICY_INVALID", f"policy {policy_path}: expected a mapping.")
    return policy_from_dict(raw, source=str(policy_path))


def policy_from_dict(raw: dict[str, Any], *, source: str = "<inline>") -> Policy:
    known = {f.name for f in dataclasses.fields(Policy)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RegistryError(
            "POLICY_INVALID",
            f"policy {source}: unknown key(s) {unknown}. Known keys: {sorted(known)}.",
        )
    builders = raw.get("allowed_builder_ids") or []
    if isinstance(builders, str):
        builders = [builders]
    values = {**raw, "allowed_builder_ids": tuple(builders)}
    return Policy(**values, source=source)
