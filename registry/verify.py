"""The one verification of a registered model: `verify_model`. Fail-closed.

It checks the version's size, downloads its attestations and then its files, recomputes the
model's root digest and runs the checks below in order; the first failure raises
RegistryError naming the check, what was expected and what was found. Nothing read from
MLflow is trusted by itself: trust comes only from the policy, which pins the public keys
(by fingerprint) and the Sigstore identity it accepts, and the signing modes it allows.
Neither the mode nor the key is taken from an MLflow tag; tags are only checked against what
the signatures vouch for.

  resolve                  the models:/ URI names an existing version
  mlflow_tag               required tags exist; attestation URIs point into the version's run;
                           (after the signatures) signing_mode and model_digest tags agree
  download_size            model files + attestations fit the policy's max_model_bytes,
                           by MLflow's artifact listing, before anything is downloaded
  download                 model files and attestations could be fetched
  policy_signing_mode      the signature's mode (key / sigstore) is in the policy's
                           allowed_signing_modes
  trust_root               the policy (and caller) supply that mode's trust root
  policy_trusted_key       key mode: the public key's fingerprint is pinned by the policy
  model_signature          every file matches the model signature, made by the trusted signer
  signature_subject        the signature's subject digest equals the recomputed digest
  expected_digest          the digest equals the one the caller expects (if given)
  provenance_signature     the DSSE envelope verifies with the trusted signer
  provenance_format        it is a SLSA v1 provenance with Shipyard's buildType
  provenance_subject       its subject digest equals the recomputed digest
  provenance_model_name    its subject name is the registered model name in the URI
  policy_imported_model    an imported model (import buildType, registry/imports.py) is
                           refused unless the policy's allowed_import_sources lists its
                           source; a listed import skips the eval checks below (never gated)
  policy_base_model        the base model (a fine-tune's `base_model` dependency, or the
                           imported model itself) is in allowed_base_models (if set)
  eval_attestation         a signed eval attestation exists (refused when missing only if
                           the policy has an eval requirement); a version holds one per
                           evaluation (eval.*.json, then evaluations/eval-*.json)
  eval_attestation_signature  each verifies with the trusted signer (same as the provenance)
  eval_attestation_format  each is an in-toto test-result statement with Shipyard's claims
  eval_attestation_subject each one's subject digest equals the recomputed digest
  eval_attestation_champion with `evaluated_against` (deploy) and an eval requirement: the
                           newest evaluation measured against that champion is the evidence,
                           DEPLOY_EVIDENCE_STALE when there is none; without it, the newest
  byproduct_digest         the SBOM / eval report / eval attestation logged next to the
                           provenance match its byproducts
  policy_builder           builder.id is in the policy's allowed_builder_ids
  policy_source_repository the source dependency is the policy's repository (if set)
  policy_eval_gate         the attested gate outcome is the policy's required one (if set)
  policy_gate_mode         the attested gate mode is in required_gate_modes (if set)
  policy_eval_checks       every check in required_eval_checks is attested as passed (if set)

The eval requirements read the signed eval attestation only: never an MLflow tag or the
unsigned eval_report.json (registry/eval_attestation.py).

Modules: verify_fetch.py (resolve, attestation names, bounded download), verify_signature.py
(signing mode, trust root, model signature, digests), verify_provenance.py (the provenance,
byproducts, builder and repository), verify_origin.py (imports and base models),
verify_eval.py (eval attestations and the eval policy), verify_checks.py (what the checks
share); this module runs them in the order above and keeps the public API.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from common.digests import Sha256, is_sha256
from registry import eval_attestation as eval_att
from registry import mlflow_registry as reg
from registry import provenance as prov
from registry.base_model import BaseModelRef
from registry.errors import RegistryError
from registry.model_uri import ModelUri
from registry.policy import Policy
from registry.verify_checks import CheckOutcome, VerifyRequest, require
from registry.verify_eval import check_eval_attestations, check_eval_policy, imported_eval_skips
from registry.verify_fetch import (
    attestation_names,
    attestations_uri,
    check_download_size,
    download,
    resolve,
)
from registry.verify_origin import check_origin
from registry.verify_provenance import check_byproducts, check_policy, check_provenance
from registry.verify_signature import check_model_signature, establish_trust

# The public API, wherever each part now lives.
__all__ = ["CheckOutcome", "VerificationResult", "verify_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerificationResult:
    model_uri: str
    registered_model_name: str
    version: str
    model_digest: Sha256
    signing_mode: str
    builder_id: str
    source_repository: str | None
    checks: tuple[CheckOutcome, ...]
    # The verified model files, when the caller asked to keep them (`download_dir`): serve
    # these bytes, not a second download that nothing has checked.
    model_dir: Path | None = None
    # Imported as it is (import buildType), not trained by Shipyard.
    imported: bool = False
    # The base model the signed provenance names (the model itself when imported); None: the
    # provenance records no base identity.
    base_model: BaseModelRef | None = None


def verify_model(
    model_uri: str,
    *,
    tracking_uri: str,
    policy: Policy,
    public_key: Path | None = None,
    download_dir: Path | None = None,
    expected_digest: str | None = None,
    evaluated_against: eval_att.CurrentChampion | None = None,
) -> VerificationResult:
    """Verify `models:/NAME@ALIAS` or `models:/NAME/VERSION` against `policy`.

    `public_key` is the PEM public key for key-mode signatures; it is trusted only when
    `policy.trusted_key_fingerprints` pins its fingerprint. Sigstore-mode signatures are
    checked against `policy.sigstore_identity` / `sigstore_oidc_issuer`. With
    `expected_digest` (`sha256:<hex>` or `<hex>`) the model's root digest must equal it.
    With `download_dir`, the verified model stays in `download_dir/model`. With
    `evaluated_against` (deploy: the champion the model would replace), the eval policy judges
    the newest evaluation measured against that champion; DEPLOY_EVIDENCE_STALE without one.
    """
    name = ModelUri.parse(model_uri).name
    request = VerifyRequest(model_uri, name, policy, public_key, _digest_hex(expected_digest),
                            evaluated_against)
    client = reg.client_for(tracking_uri)
    version = resolve(client, model_uri)
    if download_dir is not None:
        return _verify(client, request, version, Path(download_dir))
    with tempfile.TemporaryDirectory(prefix="shipyard-verify-") as tmp:
        return _verify(client, request, version, Path(tmp), keep=False)


def _verify(
    client: MlflowClient,
    request: VerifyRequest,
    version: ModelVersion,
    work_dir: Path,
    *,
    keep: bool = True,
) -> VerificationResult:
    policy = request.policy
    checks: list[CheckOutcome] = []
    tags = dict(version.tags)
    signature_name, provenance_name = attestation_names(tags, str(version.run_id))
    checks.append(CheckOutcome("mlflow_tag", "passed", "attestation URIs point into the run"))
    checks.append(check_download_size(client, version, policy))
    attest_dir = download(client, attestations_uri(version), work_dir, version)

    mode, trust = establish_trust(attest_dir / signature_name, request, checks)
    tag_mode = tags.get(reg.TAG_SIGNING_MODE)
    require("mlflow_tag", tag_mode in (None, mode), mode, tag_mode, "MLflow tag signing_mode")
    model_dir = download(client, str(version.source), work_dir, version)
    checks.append(CheckOutcome("download", "passed", f"{version.source}"))

    digest = check_model_signature(model_dir, attest_dir / signature_name, trust, request,
                                   checks)
    statement = check_provenance(attest_dir / provenance_name, trust, digest, request,
                                 str(version.name), checks)
    imported = prov.is_imported(statement)
    _check_tags(tags, digest, imported, checks)
    base = check_origin(statement, imported, policy, checks)
    evidence = None
    if imported:  # allowed by the check above: never trained or gated by Shipyard
        checks.extend(imported_eval_skips())
    else:
        evidence = check_eval_attestations(attest_dir, mode, digest, trust, request, checks)
    checks.append(check_byproducts(statement, attest_dir))
    checks.extend(check_policy(statement, policy))
    if not imported:
        checks.extend(check_eval_policy(evidence, policy))

    result = VerificationResult(
        model_uri=request.model_uri,
        registered_model_name=str(version.name),
        version=str(version.version),
        model_digest=digest,
        signing_mode=mode,
        builder_id=prov.builder_id(statement),
        source_repository=prov.source_repository(statement),
        checks=tuple(checks),
        model_dir=model_dir if keep else None,
        imported=imported,
        base_model=base,
    )
    logger.info("verified %s (version %s): sha256:%s", request.model_uri, result.version, digest)
    return result


def _check_tags(
    tags: dict[str, str], digest: str, imported: bool, checks: list[CheckOutcome]
) -> None:
    """The MLflow tags agree with what the signatures vouch for (tags are never trusted)."""
    tag_digest = tags.get(reg.TAG_MODEL_DIGEST)
    require(
        "mlflow_tag",
        tag_digest == digest,
        f"sha256:{digest}",
        f"sha256:{tag_digest}",
        "MLflow tag model_digest",
    )
    checks.append(CheckOutcome("mlflow_tag", "passed", f"model_digest = sha256:{digest}"))
    tag_imported = tags.get(reg.TAG_IMPORTED)
    require("mlflow_tag", tag_imported in (None, str(imported).lower()), str(imported).lower(),
            tag_imported, f"MLflow tag {reg.TAG_IMPORTED}")


def _digest_hex(digest: str | None) -> str | None:
    if digest is None:
        return None
    hex_part = digest.strip().lower().removeprefix("sha256:")
    if not is_sha256(hex_part):
        raise RegistryError(
            "EXPECTED_DIGEST_INVALID",
            f"expected digest {digest!r}: write it as sha256:<64 hex> (the model's root digest, "
            "e.g. from `shipyard verify` or the registration's model_digest).",
            check="expected_digest",
        )
    return hex_part
