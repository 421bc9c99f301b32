"""Sign and verify in-toto statements (the SLSA provenance) as DSSE envelopes.

Key mode: a plain DSSE envelope (securesystemslib), signed with the same ECDSA P-256 key pair
as the model signature, so one trusted public key covers both; the envelope's `keyid` is
securesystemslib's default key id of that public key. Sigstore mode: a Sigstore bundle holding
the DSSE envelope, signed keyless with the CI's OIDC identity and logged in Rekor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from registry.errors import RegistryError
from registry.signing import KeyPair, SigstoreIdentity, ambient_identity_token, load_private_key

PAYLOAD_TYPE = "application/vnd.in-toto+json"
CHECK_PROVENANCE_SIGNATURE = "provenance_signature"


def statement_bytes(statement: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key_path: Path) -> str:
    """securesystemslib key id of a PEM public key (the `keyid` in our envelopes)."""
    return _sslib_key(public_key_path).keyid


def sign_statement(
    statement: dict[str, Any],
    out_path: Path,
    *,
    key_pair: KeyPair | None = None,
    sigstore: SigstoreIdentity | None = None,
) -> None:
    payload = statement_bytes(statement)
    if key_pair is not None:
        signer = CryptoSigner(load_private_key(key_pair.private_key_path))
        envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
        envelope.sign(signer)
        text = json.dumps(envelope.to_dict(), indent=2)
    elif sigstore is not None:
        text = _sigstore_sign(payload, sigstore)
    else:
        raise RegistryError("SIGNING_CONFIG", "sign_statement needs a key pair or sigstore.")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)


def verify_statement(
    envelope_path: Path,
    *,
    public_key_path: Path | None = None,
    sigstore: SigstoreIdentity | None = None,
    check: str = CHECK_PROVENANCE_SIGNATURE,
) -> dict[str, Any]:
    """Check the envelope's signature; returns the signed statement. Fail-closed. A failure
    names `check` (the provenance's by default; the eval attestation passes its own)."""
    if public_key_path is not None:
        try:
            raw = json.loads(Path(envelope_path).read_text())
        except (OSError, ValueError) as exc:
            raise _failure(f"{envelope_path} is not a DSSE envelope: {exc}", check) from exc
        payload = verify_envelope(raw, public_key_path, PAYLOAD_TYPE, check=check)
    elif sigstore is not None:
        payload = _sigstore_verify(envelope_path, sigstore, check)
    else:
        raise RegistryError(
            "TRUST_ROOT_REQUIRED",
            "verifying a signed statement needs a public key or a Sigstore identity.",
            check=check,
        )
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise _failure(f"the signed payload is not JSON: {exc}", check) from exc
    if not isinstance(statement, dict):
        raise _failure("the signed payload is not a JSON object", check)
    return statement


def sign_envelope(payload: bytes, payload_type: str, key_pair: KeyPair) -> dict[str, Any]:
    """A DSSE envelope (as a dict) over `payload`, signed with the key pair (key mode only);
    for records that are not files of their own, e.g. one line of the deployment history."""
    envelope = Envelope(payload=payload, payload_type=payload_type, signatures={})
    envelope.sign(CryptoSigner(load_private_key(key_pair.private_key_path)))
    return dict(envelope.to_dict())


def verify_envelope(
    raw: Any, public_key_path: Path, payload_type: str, *, check: str
) -> bytes:
    """The payload of DSSE envelope `raw` (a dict) if the key at `public_key_path` signed it
    with `payload_type`; RegistryError VERIFICATION_FAILED naming `check` otherwise."""
    try:
        envelope = Envelope.from_dict(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _failure(f"not a DSSE envelope: {exc}", check) from exc
    if envelope.payload_type != payload_type:
        raise _failure(
            "unexpected DSSE payload type", check, expected=payload_type,
            found=envelope.payload_type,
        )
    trusted = _sslib_key(public_key_path)
    try:
        envelope.verify([trusted], threshold=1)
    except VerificationError as exc:
        found = sorted(envelope.signatures)
        if trusted.keyid in found:
            # Right key id, bad signature: the payload (or signature) was changed after signing.
            raise _failure(
                "the DSSE signature does not match the payload: it was modified after it was "
                "signed",
                check,
                expected=f"a valid signature by keyid {trusted.keyid}",
                found="an invalid signature",
            ) from exc
        raise _failure(
            f"not signed by the trusted public key {public_key_path}",
            check,
            expected=f"keyid {trusted.keyid}",
            found=f"keyid {', '.join(found) or 'none'}",
        ) from exc
    return bytes(envelope.payload)


def _sslib_key(public_key_path: Path) -> SSlibKey:
    public_key = serialization.load_pem_public_key(Path(public_key_path).read_bytes())
    return SSlibKey.from_crypto(public_key)


def _failure(
    message: str,
    check: str = CHECK_PROVENANCE_SIGNATURE,
    *,
    expected: str | None = None,
    found: str | None = None,
) -> RegistryError:
    return RegistryError(
        "VERIFICATION_FAILED",
        message,
        check=check,
        expected=expected,
        found=found,
    )


def _sigstore_sign(payload: bytes, sigstore: SigstoreIdentity) -> str:
    # Imported here: sigstore pulls in network clients that key mode never needs.
    from sigstore import dsse
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext

    token = ambient_identity_token()
    trust = ClientTrustConfig.staging() if sigstore.staging else ClientTrustConfig.production()
    context = SigningContext.from_trust_config(trust)
    with context.signer(IdentityToken(token)) as signer:
        bundle = signer.sign_dsse(dsse.Statement(payload))
    return bundle.to_json()


def _sigstore_verify(bundle_path: Path, sigstore: SigstoreIdentity, check: str) -> bytes:
    from sigstore.models import Bundle
    from sigstore.verify import Verifier, policy

    verifier = Verifier.staging() if sigstore.staging else Verifier.production()
    try:
        bundle = Bundle.from_json(Path(bundle_path).read_bytes())
        payload_type, payload = verifier.verify_dsse(
            bundle, policy.Identity(identity=sigstore.identity, issuer=sigstore.oidc_issuer)
        )
    except Exception as exc:  # sigstore raises VerificationError, InvalidBundle, ...
        raise _failure(
            f"the Sigstore bundle does not verify: {exc}",
            check,
            expected=f"signer {sigstore.identity} from {sigstore.oidc_issuer}",
        ) from exc
    if payload_type != PAYLOAD_TYPE:
        raise _failure(
            "unexpected DSSE payload type", check, expected=PAYLOAD_TYPE, found=payload_type
        )
    return payload
