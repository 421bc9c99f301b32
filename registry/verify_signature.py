"""Who signed the model, and that the signature covers these bytes (registry/verify.py).

The signing mode only selects the trust root, which comes from the policy (and the caller's
public key, trusted only when the policy pins its fingerprint), never from an MLflow tag.
Checks: policy_signing_mode, trust_root, policy_trusted_key, model_signature,
signature_subject, expected_digest.
"""

from __future__ import annotations

from pathlib import Path

from common.digests import Sha256, model_root_digest
from registry.errors import RegistryError
from registry.policy import Policy
from registry.signing import (
    SigstoreIdentity,
    public_key_fingerprint,
    signature_signing_mode,
    verify_model_signature,
)
from registry.verify_checks import CheckOutcome, VerifyRequest, require

# key mode: the public key file; sigstore mode: the identity. Exactly one is set.
TrustRoot = tuple[Path | None, SigstoreIdentity | None]


def establish_trust(
    signature: Path, request: VerifyRequest, checks: list[CheckOutcome]
) -> tuple[str, TrustRoot]:
    """The signature's mode, allowed by the policy, and the policy's trust root for it."""
    policy = request.policy
    # The mode only selects the trust root, which comes from the policy, never from a tag.
    mode = signature_signing_mode(signature)
    checks.append(_check_signing_mode(mode, policy))
    key_path, sigstore = _trust_root(mode, request.public_key, policy)
    checks.append(CheckOutcome("trust_root", "passed", _describe_trust(key_path, sigstore)))
    if key_path is not None:
        checks.append(_check_pinned_key(key_path, policy))
    return mode, (key_path, sigstore)


def check_model_signature(
    model_dir: Path, signature: Path, trust: TrustRoot, request: VerifyRequest,
    checks: list[CheckOutcome],
) -> Sha256:
    """The model's recomputed root digest, once the trusted signature vouches for it."""
    key_path, sigstore = trust
    digest = model_root_digest(model_dir)
    signed = verify_model_signature(
        model_dir, signature, public_key_path=key_path, sigstore=sigstore
    )
    checks.append(CheckOutcome("model_signature", "passed", f"all files match sha256:{signed}"))
    require(
        "signature_subject",
        signed == digest,
        f"sha256:{digest}",
        f"sha256:{signed}",
        "signature subject",
    )
    checks.append(CheckOutcome("signature_subject", "passed", f"sha256:{digest}"))
    checks.append(_check_expected_digest(digest, request))
    return digest


def _trust_root(
    mode: str, public_key: Path | None, policy: Policy
) -> tuple[Path | None, SigstoreIdentity | None]:
    if mode == "key":
        if public_key is None or not Path(public_key).is_file():
            raise RegistryError(
                "VERIFICATION_FAILED",
                "this version is signed in key mode: pass the signer's public key "
                "(--public-key, by default $SHIPYARD_HOME/keys/signing.pub); the policy must "
                "pin its fingerprint.",
                check="trust_root",
                expected="a PEM public key file",
                found=str(public_key),
            )
        return Path(public_key), None
    if policy.sigstore is None:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"this version is signed keyless with Sigstore: policy {policy.source} must "
            "set sigstore_identity and sigstore_oidc_issuer.",
            check="trust_root",
            expected="a Sigstore identity in the policy",
            found="none",
        )
    return None, policy.sigstore


def _check_signing_mode(mode: str, policy: Policy) -> CheckOutcome:
    allowed = policy.signing_modes
    if mode not in allowed:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"the model is signed in {mode} mode, which policy {policy.source} does not allow: "
            "add it to allowed_signing_modes (with its trust root: trusted_key_fingerprints "
            "for key, sigstore_identity + sigstore_oidc_issuer for sigstore), or verify with "
            "the policy meant for this model.",
            check="policy_signing_mode",
            expected=f"one of {list(allowed)}",
            found=mode,
        )
    return CheckOutcome("policy_signing_mode", "passed", mode)


def _check_pinned_key(key_path: Path, policy: Policy) -> CheckOutcome:
    fingerprint = f"sha256:{public_key_fingerprint(key_path)}"
    if fingerprint not in policy.trusted_key_fingerprints:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"public key {key_path} is not pinned by policy {policy.source}: a key file is no "
            "trust root by itself. If you trust this key, add its fingerprint to the policy's "
            "trusted_key_fingerprints (this machine's key: `python -m registry.cli pin-key` "
            "pins it in $SHIPYARD_HOME/keys/trust-policy.yaml); otherwise pass the pinned "
            "key.",
            check="policy_trusted_key",
            expected=f"one of {list(policy.trusted_key_fingerprints)}",
            found=fingerprint,
        )
    return CheckOutcome("policy_trusted_key", "passed", fingerprint)


def _check_expected_digest(digest: str, request: VerifyRequest) -> CheckOutcome:
    if request.expected_digest is None:
        return CheckOutcome("expected_digest", "skipped", "no digest expected")
    if digest != request.expected_digest:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{request.model_uri} is validly signed but is not the model you expect: it may "
            "have moved to another version. Verify the version you meant (models:/NAME/VERSION) "
            "or update the expected digest.",
            check="expected_digest",
            expected=f"sha256:{request.expected_digest}",
            found=f"sha256:{digest}",
        )
    return CheckOutcome("expected_digest", "passed", f"sha256:{digest}")


def _describe_trust(key_path: Path | None, sigstore: SigstoreIdentity | None) -> str:
    if key_path is not None:
        return f"public key {key_path}"
    assert sigstore is not None
    return f"Sigstore identity {sigstore.identity} ({sigstore.oidc_issuer})"
