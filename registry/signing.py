"""Model signatures with OpenSSF `model-signing`, in key mode or Sigstore keyless mode.

The signature file (`model.sig`, a Sigstore bundle holding a DSSE envelope) is written
outside the model directory, so the directory that is signed, logged to MLflow and served is
exactly the one whose `model_root_digest` is the model's identity.

Key mode uses one ECDSA P-256 key pair per key directory, generated on first use: model-signing
only accepts elliptic-curve keys, and the same pair signs the SLSA provenance (registry.dsse),
so a verifier trusts one public key for both. The private key file is created 0600 in a 0700
directory and never read anywhere but here; only its path is printed.

A public key file is no trust root by itself: verification trusts a key only when the policy
pins its fingerprint. Generating the pair therefore also pins it in the local trust policy
(`<key_dir>/trust-policy.yaml`, 0600, see registry.policy) and prints the fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing import hashing, signing, verifying

from common.digests import model_root_digest
from common.fs import atomic_create_bytes, atomic_write_bytes, private_dir
from registry.errors import RegistryError
from registry.identity import SigstoreIdentity
from registry.policy import LOCAL_TRUST_POLICY_NAME, load_policy, pin_local_key

logger = logging.getLogger(__name__)

PRIVATE_KEY_NAME = "signing.key"
PUBLIC_KEY_NAME = "signing.pub"
CHECK_MODEL_SIGNATURE = "model_signature"


@dataclass(frozen=True)
class KeyPair:
    private_key_path: Path
    public_key_path: Path

    @property
    def fingerprint(self) -> str:
        return public_key_fingerprint(self.public_key_path)


def public_key_fingerprint(public_key_path: Path) -> str:
    """sha256 of the PEM public key: the `publicKey.hint` model-signing writes in its bundle."""
    key = _load_public_key(public_key_path)
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def ensure_key_pair(key_dir: Path, *, allow_generation: bool = True) -> KeyPair:
    """Load the key pair in `key_dir`, generating it on first use when `allow_generation`.

    With `allow_generation` the key is also pinned in the local trust policy when that does
    not exist yet (first use, or a pair made before pinning existed). Without it (a cluster:
    `register.allow_key_generation: false`) a missing key is KEY_GENERATION_DISABLED and
    nothing is written to `key_dir`, which may be a read-only mounted secret.

    Safe against two registrations starting at once: the private key is published with a
    hard link, which fails instead of overwriting, and the loser loads the winner's key.
    """
    key_dir = Path(key_dir).expanduser()
    private_path = key_dir / PRIVATE_KEY_NAME
    public_path = key_dir / PUBLIC_KEY_NAME
    generated = False
    if not private_path.exists():
        if not allow_generation:
            raise RegistryError(
                "KEY_GENERATION_DISABLED",
                f"no signing key at {private_path} and register.allow_key_generation is false "
                "(a remote run never signs with a throwaway key): mount the signing key pair "
                "there (e.g. a Kubernetes secret), or set register.signing_mode='sigstore' "
                "with the CI's OIDC identity.",
            )
        generated = _generate_private_key(key_dir, private_path)
    _check_private_key_permissions(private_path)
    private_key = load_private_key(private_path)
    # The public key is always derived from the private one, so a stale or swapped .pub
    # file next to it cannot make us publish a key that does not match our signatures.
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        if not allow_generation and not os.access(key_dir, os.W_OK):
            raise RegistryError(
                "KEY_INVALID",
                f"{public_path} is missing or does not match {private_path}, and {key_dir} is "
                "read-only: mount the public key next to the private key.",
            )
        atomic_write_bytes(public_path, public_pem, mode=0o644)
    pair = KeyPair(private_key_path=private_path, public_key_path=public_path)
    if allow_generation:
        _pin_in_local_trust_policy(key_dir, pair, announce=generated)
    return pair


def _pin_in_local_trust_policy(key_dir: Path, pair: KeyPair, *, announce: bool) -> None:
    """Pin a key generated here, once: when there is no local trust policy yet (first use),
    or it pins no key. A trust policy that already trusts other keys is never extended behind
    the user's back: a new key generated beside it (the old one deleted, perhaps by someone
    else) is announced, and verification refuses its signatures until the user pins it
    (`python -m registry.cli pin-key`)."""
    trust_path = key_dir / LOCAL_TRUST_POLICY_NAME
    if trust_path.exists() and not announce:
        return  # the user's trust policy decides; an existing key is not pinned behind it
    fingerprint = f"sha256:{pair.fingerprint}"
    pinned = load_policy(trust_path).trusted_key_fingerprints if trust_path.exists() else ()
    if pinned and fingerprint not in pinned:
        print(
            f"[shipyard] WARNING generated a new signing key {fingerprint}; the local trust "
            f"policy {trust_path} pins other keys ({', '.join(pinned)}) and was NOT extended. "
            "Models signed with the new key will not verify until you pin it: "
            "`python -m registry.cli pin-key` (if you replaced the key yourself).",
            flush=True,
        )
        return
    pin_local_key(key_dir, fingerprint)
    print(
        f"[shipyard] pinned signing key {fingerprint} in the local trust policy {trust_path} "
        "(verification trusts only the keys pinned there)",
        flush=True,
    )


def sign_model(
    model_dir: Path,
    signature_path: Path,
    *,
    key_pair: KeyPair | None = None,
    sigstore: SigstoreIdentity | None = None,
) -> str:
    """Sign `model_dir` into `signature_path`; returns the signed root digest."""
    if (key_pair is None) == (sigstore is None):
        raise RegistryError("SIGNING_CONFIG", "sign_model needs exactly one of key_pair, sigstore.")
    # Default hashing (sha256 per file, git metadata ignored), the same as common.digests,
    # so the signed root digest is the model's identity.
    config = signing.Config()
    if key_pair is not None:
        config.use_elliptic_key_signer(private_key=key_pair.private_key_path)
    else:
        assert sigstore is not None
        config.use_sigstore_signer(
            identity_token=ambient_identity_token(), use_staging=sigstore.staging
        )
    signature_path.parent.mkdir(parents=True, exist_ok=True)
    config.sign(Path(model_dir), Path(signature_path))
    return signature_subject_digest(signature_path)


def verify_model_signature(
    model_dir: Path,
    signature_path: Path,
    *,
    public_key_path: Path | None = None,
    sigstore: SigstoreIdentity | None = None,
) -> str:
    """Check `model_dir` against its signature; returns the signed root digest.

    Every file is hashed again: a modified, added or removed file fails, and so does a
    signature made by any key other than `public_key_path` (or any identity other than
    `sigstore`). Raises RegistryError(check="model_signature").
    """
    if (public_key_path is None) == (sigstore is None):
        raise RegistryError(
            "TRUST_ROOT_REQUIRED",
            "verifying a model signature needs exactly one trust root: a public key "
            "(key mode) or a Sigstore identity + issuer (sigstore mode).",
            check=CHECK_MODEL_SIGNATURE,
        )
    signed_digest = signature_subject_digest(signature_path)
    config = verifying.Config()
    if public_key_path is not None:
        config.use_elliptic_key_verifier(public_key=Path(public_key_path))
    else:
        assert sigstore is not None
        config.use_sigstore_verifier(
            identity=sigstore.identity,
            oidc_issuer=sigstore.oidc_issuer,
            use_staging=sigstore.staging,
        )
    try:
        config.verify(Path(model_dir), Path(signature_path))
    except Exception as exc:  # model-signing raises ValueError, InvalidSignature, ...
        raise _signature_failure(exc, model_dir, signature_path, public_key_path) from exc
    return signed_digest


def ambient_identity_token() -> str:
    """The CI's OIDC token (GitHub Actions with `id-token: write`, GitLab, Buildkite, ...).

    Asked for explicitly so that a run without one fails here with a clear error instead of
    starting model-signing's interactive browser login on a headless worker.
    """
    from sigstore.oidc import IdentityError, detect_credential  # only sigstore mode needs it

    try:
        token = detect_credential()
    except IdentityError as exc:  # e.g. GitHub Actions without `id-token: write`
        raise RegistryError("SIGSTORE_NO_IDENTITY", f"no usable OIDC credential: {exc}") from exc
    if not token:
        raise RegistryError(
            "SIGSTORE_NO_IDENTITY",
            "signing_mode='sigstore' found no ambient OIDC credential. In GitHub Actions grant "
            "the job `permissions: id-token: write`; on a laptop use signing_mode='key'.",
        )
    return token


def signature_signing_mode(signature_path: Path) -> str:
    """"key" or "sigstore", from the signature bundle's verification material (read without
    verifying). The mode only selects which trust root the policy must supply; the signature
    is then verified against that root, so a false claim cannot pass."""
    try:
        bundle = json.loads(Path(signature_path).read_text())
        material = bundle.get("verificationMaterial") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{signature_path} is not a model-signing bundle: {exc}",
            check=CHECK_MODEL_SIGNATURE,
        ) from exc
    keys = set(material) if isinstance(material, dict) else set()
    if "publicKey" in keys:
        return "key"
    if keys & {"certificate", "x509CertificateChain"}:
        return "sigstore"
    raise RegistryError(
        "VERIFICATION_FAILED",
        f"{signature_path} names neither a public key nor a Sigstore certificate",
        check=CHECK_MODEL_SIGNATURE,
        expected="verificationMaterial.publicKey or .certificate",
        found=str(sorted(material) if isinstance(material, dict) else material),
    )


def signature_subject_digest(signature_path: Path) -> str:
    """Root digest in the signature's in-toto subject (read without verifying)."""
    statement = _signature_statement(signature_path)
    return str(statement["subject"][0]["digest"]["sha256"])


def _signature_failure(
    exc: Exception, model_dir: Path, signature_path: Path, public_key_path: Path | None
) -> RegistryError:
    bundle = json.loads(Path(signature_path).read_text())
    key_hint = bundle.get("verificationMaterial", {}).get("publicKey", {}).get("hint")
    if (
        public_key_path is not None
        and key_hint
        and key_hint != public_key_fingerprint(public_key_path)
    ):
        return RegistryError(
            "VERIFICATION_FAILED",
            "the model signature was made by another key than the trusted public key "
            f"{public_key_path}",
            check=CHECK_MODEL_SIGNATURE,
            expected=f"key sha256:{public_key_fingerprint(public_key_path)}",
            found=f"key sha256:{key_hint}",
        )
    changes = _file_changes(model_dir, signature_path)
    if not changes:  # the files are the signed ones: the signature bytes themselves are bad
        return RegistryError(
            "VERIFICATION_FAILED",
            f"the model signature does not verify: {type(exc).__name__}: {exc}",
            check=CHECK_MODEL_SIGNATURE,
            expected="a valid signature by the trusted signer",
            found="an invalid signature",
        )
    return RegistryError(
        "VERIFICATION_FAILED",
        f"the model files do not match their signature: {'; '.join(changes)}",
        check=CHECK_MODEL_SIGNATURE,
        expected=f"sha256:{signature_subject_digest(signature_path)}",
        found=f"sha256:{model_root_digest(Path(model_dir))}",
    )


def _file_changes(model_dir: Path, signature_path: Path) -> list[str]:
    """Files modified, added or removed relative to the (unverified) signed manifest."""
    resources = _signature_statement(signature_path)["predicate"].get("resources", [])
    signed = {str(r["name"]): str(r["digest"]) for r in resources}
    actual = {
        d.identifier: d.digest.digest_hex
        for d in hashing.Config().hash(Path(model_dir)).resource_descriptors()
    }
    changes = [
        f"modified {n}" for n in sorted(signed.keys() & actual.keys()) if signed[n] != actual[n]
    ]
    changes += [f"added {n}" for n in sorted(actual.keys() - signed.keys())]
    changes += [f"removed {n}" for n in sorted(signed.keys() - actual.keys())]
    return changes


def _signature_statement(signature_path: Path) -> dict:
    try:
        bundle = json.loads(Path(signature_path).read_text())
        payload = bundle["dsseEnvelope"]["payload"]
        return dict(json.loads(base64.b64decode(payload)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{signature_path} is not a model-signing bundle with a DSSE payload: {exc}",
            check=CHECK_MODEL_SIGNATURE,
        ) from exc


def _generate_private_key(key_dir: Path, private_path: Path) -> bool:
    """Create the private key; False when a concurrent registration created it first."""
    private_dir(key_dir)
    os.chmod(key_dir, 0o700)  # an existing keys directory too: it holds a private key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not atomic_create_bytes(private_path, pem, mode=0o600):
        return False  # another registration generated the key first: use theirs
    logger.info("generated a signing key pair; private key %s (mode 0600)", private_path)
    print(
        f"[shipyard] generated signing key pair: private key {private_path} (0600, keep it "
        f"secret), public key {private_path.with_name(PUBLIC_KEY_NAME)} (give it to verifiers)",
        flush=True,
    )
    return True


def _check_private_key_permissions(private_path: Path) -> None:
    mode = stat.S_IMODE(private_path.stat().st_mode)
    if mode & 0o077:
        raise RegistryError(
            "KEY_PERMISSIONS",
            f"private key {private_path} has mode {oct(mode)}: anyone but its owner may read "
            f"it. Run `chmod 600 {private_path}` (or delete it to generate a new pair).",
        )


def load_private_key(private_path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        # The exception text never contains key bytes; still, keep it out of the message.
        raise RegistryError(
            "KEY_INVALID",
            f"{private_path} is not an unencrypted PEM private key; delete it to generate "
            "a new pair.",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise RegistryError(
            "KEY_INVALID",
            f"{private_path} is not an ECDSA P-256 key (model-signing needs an EC key).",
        )
    return key


def _load_public_key(public_key_path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(Path(public_key_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise RegistryError(
            "KEY_INVALID", f"{public_key_path} is not a readable PEM public key: {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise RegistryError("KEY_INVALID", f"{public_key_path} is not an ECDSA public key.")
    return key


