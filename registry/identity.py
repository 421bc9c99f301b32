"""Who a keyless (Sigstore) signature must come from.

Its own module because both sides need it: the policy names the identity it trusts
(registry.policy) and signing signs and verifies against it (registry.signing), and signing
also pins keys in the policy. With the identity here the arrow runs one way only,
signing -> policy -> identity (an import-linter contract in pyproject.toml keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SigstoreIdentity:
    """Who a keyless signature must come from: the OIDC identity and its issuer."""

    identity: str
    oidc_issuer: str
    staging: bool = False
