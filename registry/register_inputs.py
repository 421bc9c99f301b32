"""The register stage's checks before any work: the model, data and config are the ones the
earlier stages produced, the base model is the one its identity names, and the signer can
sign (a key pair, or an ambient OIDC identity). Shared with registry/imports.py (`signer`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.digests import model_root_digest, sha256_file
from common.redact import redact
from registry.attest import Signer
from registry.base_model import BaseModelRef, parse_base_identity
from registry.config import RegisterConfig
from registry.errors import RegistryError
from registry.signing import SigstoreIdentity, ambient_identity_token, ensure_key_pair

# the register stage's log, under the name it had before the split
logger = logging.getLogger("registry.stage")


def check_model_files(model_dir: Path, expected_digest: str, refusal: str) -> None:
    """The directory about to be signed holds the bytes the request names: MODEL_DIR_MISSING
    or MODEL_DIGEST_MISMATCH ("the files in DIR are not " + `refusal`) otherwise. One check
    for a trained model (register) and a provisioned base (import)."""
    if not model_dir.is_dir():
        raise RegistryError("MODEL_DIR_MISSING", f"model_dir {model_dir} is not a directory.")
    found = model_root_digest(model_dir)
    if found != expected_digest:
        raise RegistryError("MODEL_DIGEST_MISMATCH",
                            f"the files in {model_dir} are not {refusal}",
                            expected=expected_digest, found=found)


def check_inputs(
    model_dir: Path,
    model_digest: str,
    dataset_digests: Mapping[str, str],
    dataset_files: Mapping[str, Path],
    config_digest: str,
    resolved_config_json: str,
) -> None:
    check_model_files(model_dir, model_digest,
                      "the model the train stage produced: refusing to sign them. Re-run "
                      "training or pass the matching directory.")
    if set(dataset_files) != set(dataset_digests):
        raise RegistryError(
            "DATASET_DIGEST_MISMATCH",
            "dataset splits given do not match the splits the model was trained on.",
            expected=str(sorted(dataset_digests)),
            found=str(sorted(dataset_files)),
        )
    for split, path in sorted(dataset_files.items()):
        found = sha256_file(Path(path))
        if found != dataset_digests[split]:
            raise RegistryError(
                "DATASET_DIGEST_MISMATCH",
                f"dataset split {split!r} ({path}) is not the data the model was trained on.",
                expected=dataset_digests[split],
                found=found,
            )
    config_found = hashlib.sha256(resolved_config_json.encode()).hexdigest()
    if config_found != config_digest:
        raise RegistryError(
            "CONFIG_DIGEST_MISMATCH",
            "config_digest is not the sha256 of resolved_config_json.",
            expected=config_digest,
            found=config_found,
        )


def check_base_model(
    identity: str | Mapping[str, Any] | None, base_model_dir: Path | None
) -> BaseModelRef | None:
    """The checked base identity; its directory, when given, must still be that model."""
    if identity is None:
        return None
    base = parse_base_identity(identity)
    if base_model_dir is not None:
        found = model_root_digest(Path(base_model_dir))
        if found != base.model_digest:
            raise RegistryError(
                "BASE_MODEL_MISMATCH",
                f"base_model_dir {base_model_dir} is not the base model its identity names "
                f"({base.source}): the provenance would name the wrong base. Pass the directory "
                "training started from with its own identity (provision it again).",
                expected=base.model_digest,
                found=found,
            )
    return base


def make_signer(config: RegisterConfig, key_dir: Path) -> Signer:
    """The signer of `config`'s signing mode, checked before anything is written."""
    if config.signing_mode == "key":
        pair = ensure_key_pair(key_dir, allow_generation=config.allow_key_generation)
        logger.info("signing key %s (public key %s)", pair.private_key_path, pair.public_key_path)
        return Signer("key", pair, None)
    assert config.sigstore_identity and config.sigstore_oidc_issuer  # RegisterConfig checks
    ambient_identity_token()  # no OIDC identity: fail before anything is written to MLflow
    identity = SigstoreIdentity(
        config.sigstore_identity, config.sigstore_oidc_issuer, config.sigstore_staging
    )
    return Signer("sigstore", None, identity)


def recorded_dataset_uris(
    dataset_files: Mapping[str, Path], dataset_uris: Mapping[str, str] | None
) -> dict[str, str]:
    uris = {split: Path(path).resolve().as_uri() for split, path in dataset_files.items()}
    uris.update(dataset_uris or {})
    return redact(uris)  # recorded in MLflow and the provenance: no credential in a URI
