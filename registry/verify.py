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
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from common.digests import model_root_digest, sha256_file
from registry import eval_attestation as eval_att
from registry import mlflow_registry as reg
from registry import provenance as prov
from registry.base_model import BaseModelRef, base_from_statement
from registry.dsse import verify_statement
from registry.errors import RegistryError
from registry.policy import Policy
from registry.signing import (
    SigstoreIdentity,
    public_key_fingerprint,
    signature_signing_mode,
    verify_model_signature,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    status: Literal["passed", "skipped"]
    detail: str


@dataclass(frozen=True)
class VerificationResult:
    model_uri: str
    registered_model_name: str
    version: str
    model_digest: str
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
    name = _parse_model_uri(model_uri)[0]
    request = _Request(model_uri, name, policy, public_key, _digest_hex(expected_digest),
                       evaluated_against)
    client = reg.client_for(tracking_uri)
    version = _resolve(client, model_uri)
    if download_dir is not None:
        return _verify(client, request, version, Path(download_dir))
    with tempfile.TemporaryDirectory(prefix="shipyard-verify-") as tmp:
        return _verify(client, request, version, Path(tmp), keep=False)


@dataclass(frozen=True)
class _Request:
    model_uri: str
    # the registered model name in the URI: the provenance must be about this name
    name: str
    policy: Policy
    public_key: Path | None
    expected_digest: str | None
    evaluated_against: eval_att.CurrentChampion | None = None


def _verify(
    client: MlflowClient,
    request: _Request,
    version: ModelVersion,
    work_dir: Path,
    *,
    keep: bool = True,
) -> VerificationResult:
    policy = request.policy
    checks: list[CheckOutcome] = []
    tags = dict(version.tags)
    signature_name, provenance_name = _attestation_names(tags, str(version.run_id))
    checks.append(CheckOutcome("mlflow_tag", "passed", "attestation URIs point into the run"))
    checks.append(_check_download_size(client, version, policy))
    attest_dir = _download(client, _attestations_uri(version), work_dir, version)

    # The mode only selects the trust root, which comes from the policy, never from a tag.
    mode = signature_signing_mode(attest_dir / signature_name)
    checks.append(_check_signing_mode(mode, policy))
    key_path, sigstore = _trust_root(mode, request.public_key, policy)
    checks.append(CheckOutcome("trust_root", "passed", _describe_trust(key_path, sigstore)))
    if key_path is not None:
        checks.append(_check_pinned_key(key_path, policy))
    tag_mode = tags.get(reg.TAG_SIGNING_MODE)
    _require("mlflow_tag", tag_mode in (None, mode), mode, tag_mode, "MLflow tag signing_mode")
    model_dir = _download(client, str(version.source), work_dir, version)
    checks.append(CheckOutcome("download", "passed", f"{version.source}"))

    digest = model_root_digest(model_dir)
    signed = verify_model_signature(
        model_dir, attest_dir / signature_name, public_key_path=key_path, sigstore=sigstore
    )
    checks.append(CheckOutcome("model_signature", "passed", f"all files match sha256:{signed}"))
    _require(
        "signature_subject",
        signed == digest,
        f"sha256:{digest}",
        f"sha256:{signed}",
        "signature subject",
    )
    checks.append(CheckOutcome("signature_subject", "passed", f"sha256:{digest}"))
    checks.append(_check_expected_digest(digest, request))

    statement = verify_statement(
        attest_dir / provenance_name, public_key_path=key_path, sigstore=sigstore
    )
    checks.append(CheckOutcome("provenance_signature", "passed", provenance_name))
    prov.check_format(statement)
    checks.append(CheckOutcome("provenance_format", "passed", prov.PREDICATE_TYPE))
    subject = prov.subject_digest(statement)
    _require(
        "provenance_subject",
        subject == digest,
        f"sha256:{digest}",
        f"sha256:{subject}",
        "provenance subject digest",
    )
    checks.append(CheckOutcome("provenance_subject", "passed", f"sha256:{digest}"))
    checks.append(_check_model_name(statement, request.name, str(version.name)))
    tag_digest = tags.get(reg.TAG_MODEL_DIGEST)
    _require(
        "mlflow_tag",
        tag_digest == digest,
        f"sha256:{digest}",
        f"sha256:{tag_digest}",
        "MLflow tag model_digest",
    )
    checks.append(CheckOutcome("mlflow_tag", "passed", f"model_digest = sha256:{digest}"))
    imported = prov.is_imported(statement)
    tag_imported = tags.get(reg.TAG_IMPORTED)
    _require("mlflow_tag", tag_imported in (None, str(imported).lower()), str(imported).lower(),
             tag_imported, f"MLflow tag {reg.TAG_IMPORTED}")
    base = _signed_base(statement)
    checks.append(_check_imported(statement, policy))
    checks.append(_check_base_model(base, imported, policy))
    evidence = None
    if imported:  # allowed by the check above: never trained or gated by Shipyard
        checks.extend(_imported_eval_skips())
    else:
        evidence = _check_eval_attestations(
            attest_dir, mode, digest, (key_path, sigstore), request, checks
        )
    checks.append(_check_byproducts(statement, attest_dir))
    checks.extend(_check_policy(statement, policy))
    if not imported:
        checks.extend(_check_eval_policy(evidence, policy))

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


def _resolve(client: MlflowClient, model_uri: str) -> ModelVersion:
    name, version_or_alias, by_alias = _parse_model_uri(model_uri)
    try:
        if by_alias:
            return client.get_model_version_by_alias(name, version_or_alias)
        return client.get_model_version(name, version_or_alias)
    except MlflowException as exc:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{model_uri} does not name a registered model version: {exc.message}",
            check="resolve",
        ) from exc


def _parse_model_uri(model_uri: str) -> tuple[str, str, bool]:
    rest = model_uri.removeprefix("models:/")
    if rest != model_uri:
        if "@" in rest and "/" not in rest:
            name, _, alias = rest.partition("@")
            if name and alias:
                return name, alias, True
        name, _, version = rest.rpartition("/")
        if name and version.isdigit():
            return name, version, False
    raise RegistryError(
        "MODEL_URI_INVALID",
        f"{model_uri!r}: expected models:/NAME@ALIAS (e.g. models:/shipyard-tiny@challenger) "
        "or models:/NAME/VERSION.",
        check="resolve",
    )


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
            "trusted_key_fingerprints (the local trust policy is "
            "$SHIPYARD_HOME/keys/trust-policy.yaml); otherwise pass the pinned key.",
            check="policy_trusted_key",
            expected=f"one of {list(policy.trusted_key_fingerprints)}",
            found=fingerprint,
        )
    return CheckOutcome("policy_trusted_key", "passed", fingerprint)


def _check_expected_digest(digest: str, request: _Request) -> CheckOutcome:
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


def _check_download_size(
    client: MlflowClient, version: ModelVersion, policy: Policy
) -> CheckOutcome:
    """Sum the artifact listing's sizes; an unknown size is refused (nothing is bounded)."""
    total = 0
    for uri in (str(version.source), _attestations_uri(version)):
        try:
            run_id, path = reg.parse_run_artifact_uri(uri)
            sizes = _listed_sizes(client, run_id, path)
        except (MlflowException, OSError, RegistryError) as exc:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"cannot list the version's files: {exc}",
                check="download",
                expected=f"{uri} listed by MLflow",
                found="listing error",
            ) from exc
        unknown = [name for name, size in sizes if size is None]
        if unknown:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"the artifact store does not report the size of {unknown[:3]}: the download "
                "cannot be bounded. Use an artifact store that lists sizes.",
                check="download_size",
                expected="a size for every file",
                found="unknown size",
            )
        total += sum(size or 0 for _, size in sizes)
    if total > policy.max_model_bytes:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{version.name} version {version.version} is {total} bytes, over the "
            f"max_model_bytes of policy {policy.source}: nothing was downloaded. Raise "
            "max_model_bytes in the policy if a model this large is expected.",
            check="download_size",
            expected=f"<= {policy.max_model_bytes} bytes",
            found=f"{total} bytes",
        )
    return CheckOutcome("download_size", "passed", f"{total} bytes")


def _listed_sizes(client: MlflowClient, run_id: str, path: str) -> list[tuple[str, int | None]]:
    sizes: list[tuple[str, int | None]] = []
    pending = [path]
    while pending:
        for info in client.list_artifacts(run_id, pending.pop()):
            if info.is_dir:
                pending.append(info.path)
            else:
                sizes.append((info.path, info.file_size))
    return sizes


def _attestations_uri(version: ModelVersion) -> str:
    return reg.run_artifact_uri(str(version.run_id), reg.ATTESTATIONS_ARTIFACT_PATH)


def _digest_hex(digest: str | None) -> str | None:
    if digest is None:
        return None
    hex_part = digest.strip().lower().removeprefix("sha256:")
    if len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        raise RegistryError(
            "EXPECTED_DIGEST_INVALID",
            f"expected digest {digest!r}: write it as sha256:<64 hex> (the model's root digest, "
            "e.g. from `shipyard verify` or the registration's model_digest).",
            check="expected_digest",
        )
    return hex_part


def _describe_trust(key_path: Path | None, sigstore: SigstoreIdentity | None) -> str:
    if key_path is not None:
        return f"public key {key_path}"
    assert sigstore is not None
    return f"Sigstore identity {sigstore.identity} ({sigstore.oidc_issuer})"


def _attestation_names(tags: dict[str, str], run_id: str) -> tuple[str, str]:
    """File names of signature and provenance; their URIs must point into the version's run."""
    names = []
    prefix = reg.run_artifact_uri(run_id, reg.ATTESTATIONS_ARTIFACT_PATH) + "/"
    for key in (reg.TAG_SIGNATURE_URI, reg.TAG_PROVENANCE_URI):
        uri = tags.get(key)
        name = uri.removeprefix(prefix) if uri else ""
        if not uri or not uri.startswith(prefix) or not name or "/" in name or ".." in name:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"MLflow tag {key} must point at this version's own attestations",
                check="mlflow_tag",
                expected=f"{prefix}<file>",
                found=str(uri),
            )
        names.append(name)
    return names[0], names[1]


def _download(client: MlflowClient, uri: str, work_dir: Path, version: ModelVersion) -> Path:
    try:
        return reg.download(client, uri, work_dir)
    except (MlflowException, OSError, RegistryError) as exc:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"cannot download the version's files: {exc}",
            check="download",
            expected=f"{version.source} and its attestations",
            found="download error",
        ) from exc


def _check_eval_attestations(
    attest_dir: Path,
    mode: str,
    digest: str,
    trust: tuple[Path | None, SigstoreIdentity | None],
    request: _Request,
    checks: list[CheckOutcome],
) -> eval_att.EvalEvidence | None:
    """The eval evidence the policy judges, or None (no attestation, and the policy needs
    none). Every attestation is verified (one that fails is tampering, whichever is chosen);
    then the newest one, or with `evaluated_against` the newest measured against it."""
    policy = request.policy
    first = attest_dir / eval_att.file_name(mode)
    later = sorted((attest_dir / eval_att.EVALUATIONS_DIR).glob(
        f"eval-*.{eval_att.file_name(mode).removeprefix('eval.')}"))
    paths = [p for p in (first, *later) if p.is_file()]
    if not paths:
        if policy.requires_eval:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"the version has no signed eval attestation ({first.name}), and policy "
                f"{policy.source} has eval requirements: an unevaluated model (or one whose "
                "attestation was removed) cannot show its gate passed. Evaluate the model and "
                "register it with its eval report.",
                check=eval_att.CHECK_PRESENT,
                expected=first.name,
                found="missing",
            )
        checks.append(CheckOutcome(eval_att.CHECK_PRESENT, "skipped", "not evaluated"))
        return None
    evidence = []
    for path in paths:
        statement = verify_statement(
            path, public_key_path=trust[0], sigstore=trust[1], check=eval_att.CHECK_SIGNATURE
        )
        evidence.append(eval_att.read_evidence(
            statement, digest, path.relative_to(attest_dir).as_posix()))
    names = ", ".join(e.file for e in evidence)
    checks.append(CheckOutcome(eval_att.CHECK_SIGNATURE, "passed", names))
    checks.append(CheckOutcome(eval_att.CHECK_FORMAT, "passed", eval_att.TEST_RESULT_PREDICATE))
    checks.append(CheckOutcome(eval_att.CHECK_SUBJECT, "passed", f"sha256:{digest}"))
    return _chosen_evidence(evidence, request, checks)


def _chosen_evidence(evidence: list[eval_att.EvalEvidence], request: _Request,
                     checks: list[CheckOutcome]) -> eval_att.EvalEvidence:
    current = request.evaluated_against
    if current is None or not request.policy.requires_eval:
        chosen = eval_att.newest(evidence)
        assert chosen is not None  # there is at least one
        checks.append(CheckOutcome(eval_att.CHECK_CHAMPION, "skipped",
                                   f"no champion named: the newest evaluation, {chosen.file}"))
        return chosen
    chosen = eval_att.select_evidence(evidence, current, request.model_uri)
    checks.append(CheckOutcome(eval_att.CHECK_CHAMPION, "passed",
                               f"{chosen.file} was measured against {current.label}"))
    return chosen


def _check_eval_policy(
    evidence: eval_att.EvalEvidence | None, policy: Policy
) -> list[CheckOutcome]:
    outcome = evidence.gate_outcome if evidence else None
    outcomes = []
    if policy.required_eval_gate is None:
        outcomes.append(CheckOutcome("policy_eval_gate", "skipped", f"not required ({outcome})"))
    else:
        _require(
            "policy_eval_gate",
            outcome == policy.required_eval_gate,
            policy.required_eval_gate,
            outcome,
            "eval gate outcome (signed eval attestation)",
        )
        outcomes.append(CheckOutcome("policy_eval_gate", "passed", str(outcome)))
    mode = evidence.gate_mode if evidence else None
    if policy.required_gate_modes is None:
        outcomes.append(CheckOutcome("policy_gate_mode", "skipped", f"not required ({mode})"))
    elif mode not in policy.required_gate_modes:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"the eval gate ran in {mode!r} mode, which policy {policy.source} does not accept "
            "(`absolute`: no champion was compared). Evaluate against the champion, or add "
            "the mode to required_gate_modes if bounds alone are enough.",
            check="policy_gate_mode",
            expected=f"one of {list(policy.required_gate_modes)}",
            found=str(mode),
        )
    else:
        outcomes.append(CheckOutcome("policy_gate_mode", "passed", str(mode)))
    outcomes.append(_check_required_eval_checks(evidence, policy))
    return outcomes


def _check_required_eval_checks(
    evidence: eval_att.EvalEvidence | None, policy: Policy
) -> CheckOutcome:
    required = policy.required_eval_checks
    if required is None:
        return CheckOutcome("policy_eval_checks", "skipped", "not required")
    passed = evidence.passed_tests if evidence else ()
    missing = [name for name in required if name not in passed]
    if missing:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"the eval attestation does not show the gate checks {missing} passed (policy "
            f"{policy.source}, required_eval_checks): they failed or were not run. Configure "
            "the eval gate to run them (floors, margins, a gating judge) and re-evaluate.",
            check="policy_eval_checks",
            expected=f"passed: {list(required)}",
            found=f"passed: {list(passed)}",
        )
    return CheckOutcome("policy_eval_checks", "passed", ", ".join(required))


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


def _imported_eval_skips() -> list[CheckOutcome]:
    why = "imported model, allowed by allowed_import_sources: never gated by Shipyard"
    names = (eval_att.CHECK_PRESENT, "policy_eval_gate", "policy_gate_mode",
             "policy_eval_checks")
    return [CheckOutcome(name, "skipped", why) for name in names]


def _check_byproducts(statement: dict[str, Any], attest_dir: Path) -> CheckOutcome:
    checked = []
    for item in prov.byproducts(statement):
        name, expected = item.get("name"), (item.get("digest") or {}).get("sha256")
        if not name or not expected:
            continue
        path = attest_dir / name
        found = sha256_file(path) if path.is_file() else "missing"
        _require("byproduct_digest", found == expected, expected, found, f"byproduct {name}")
        checked.append(name)
    return CheckOutcome("byproduct_digest", "passed", ", ".join(checked) or "none recorded")


def _check_policy(statement: dict[str, Any], policy: Policy) -> list[CheckOutcome]:
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
        _require(
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


def _require(check: str, ok: bool, expected: Any, found: Any, what: str) -> None:
    if not ok:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{what} does not match",
            check=check,
            expected=str(expected),
            found=str(found),
        )
