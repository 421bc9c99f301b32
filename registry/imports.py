"""Import a base model into the registry as it is, and make it the first champion.

A pipeline that fine-tunes a pretrained model needs a baseline before its first deploy: the
base itself. `import_base_model` registers the provisioned base directory as a version of the
pipeline's registered model, with the same evidence a trained model gets (model-signing
signature, signed SLSA provenance, SBOM, tags), except that the provenance's buildType is
`IMPORT_BUILD_TYPE`: Shipyard did not train it and no eval gate passed it. Its external
parameter is the source it was provisioned from, its resolved dependencies the upstream GGUF
and wheel (plus the source commit and lockfile of the converting code).

Trust is explicit: `verify_model` refuses an imported version (check `policy_imported_model`)
unless the policy lists its source in `allowed_import_sources`. The import verifies the new
version against the policy evaluate and deploy use (the local trust policy, or
`register.policy_path`) before anything points at it, and deletes it if that fails
(SELF_CHECK_FAILED), so an import the policy refuses never becomes the champion.

The champion alias is set on the imported version only when the registered model has none
(`make_champion`); importing the same digest again returns the existing version, like
`register`. The signed champion history lives in deploy (`deploy.history`), which this
package may not import: `deploy.history.import_base_as_champion` wraps this function with the
deployment lock and records the move.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.entities.model_registry import ModelVersion

from common.redact import redact, redact_text
from common.signals import signals_raise_stage_interrupted
from registry import mlflow_registry as reg
from registry import provenance as prov
from registry.aliases import aliases_of, champion_version, move_champion
from registry.attest import Attestations, ImportInputs, Signer, write_import_attestations
from registry.base_model import BaseModelRef, base_tags, parse_base_identity
from registry.config import RegisterConfig
from registry.description import import_description
from registry.errors import RegistryError
from registry.policy import Policy, load_policy
from registry.register_inputs import check_model_files, make_signer
from registry.register_store import artifact_location, mlflow_errors, registration_lock
from registry.register_tags import attestation_tags
from registry.source import source_info
from registry.verify import verify_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ImportRequest:
    """A provisioned base model to register as it is. Checked before any work is done."""

    # the provisioned HF directory (training.pretrained.ProvisionedBase.model_dir)
    model_dir: Path
    # its identity: training.pretrained.BaseModelIdentity.to_json() (or that dict); the
    # directory must hash to its model_digest
    base_model_identity: str | Mapping[str, Any]
    # registered model name (the pipeline's), champion alias, signing, policy, builder
    config: RegisterConfig
    tracking_uri: str
    artifact_root: Path | str | None
    # signing key directory in key mode when `config.key_dir` is None; also where the local
    # trust policy is looked up when `config.policy_path` is None
    key_dir: Path
    # the orchestrator's execution id (Flyte's, or "local:..."), recorded in the provenance
    execution_id: str
    # the source checkout (commit, lockfile of the converting code); None: not recorded
    project_root: Path | None = None
    workflow_inputs: Mapping[str, Any] | None = None
    # set the champion alias on the imported version when the registered model has none
    make_champion: bool = True


@dataclass(frozen=True)
class ImportResult:
    registered_model_name: str
    version: str
    model_uri: str
    model_digest: str
    # False when this digest was already registered and that version was returned
    created: bool
    # the version the champion alias names after the import (None: none, make_champion off)
    champion_version: str | None
    # True when this call set the champion alias on the imported version
    champion_moved: bool
    aliases: tuple[str, ...]
    signing_mode: str
    signer: str
    provenance_uri: str
    provenance_sha256: str
    mlflow_run_id: str
    base: BaseModelRef

    @property
    def is_champion(self) -> bool:
        return self.champion_version == self.version


def import_base_model(request: ImportRequest) -> ImportResult:
    """Register `request.model_dir` as an imported, signed, attested version; make it the
    champion when there is none (and `request.make_champion`)."""
    base = parse_base_identity(request.base_model_identity)
    _check_model_dir(Path(request.model_dir), base)
    config = request.config
    key_dir = Path(config.key_dir) if config.key_dir else Path(request.key_dir)
    signer = make_signer(config, key_dir)
    policy = _import_policy(config, key_dir, signer)  # a bad policy fails before any work
    client = reg.client_for(request.tracking_uri)
    name = config.registered_model_name
    with signals_raise_stage_interrupted(), registration_lock(request.tracking_uri, name), \
            mlflow_errors(request.tracking_uri):
        version, created = _imported_version(request, client, signer, policy, base)
        number = str(version.version)
        champion = champion_version(client, name, config.champion_alias)
        moved = champion is None and request.make_champion
        if moved:
            move_champion(client, name, number, config.champion_alias, expected_current=None)
            champion = number
        result = _result(client, version, base, created=created, champion=champion,
                         moved=moved)
    print(
        f"[shipyard] imported {base.source} as {name} version {result.version} "
        f"sha256:{base.model_digest} ({'new' if created else 'already registered'}); "
        f"{config.champion_alias}: {champion}{' (set now)' if moved else ''}",
        flush=True,
    )
    return result


def _check_model_dir(model_dir: Path, base: BaseModelRef) -> None:
    check_model_files(model_dir, base.model_digest,
                      f"the base model {base.source} was provisioned as: refusing to sign "
                      "them. Provision the base again (its cache re-checks the digest) and "
                      "import that directory.")


def _imported_version(
    request: ImportRequest, client: MlflowClient, signer: Signer, policy: Policy,
    base: BaseModelRef,
) -> tuple[ModelVersion, bool]:
    config = request.config
    name, digest = config.registered_model_name, base.model_digest
    existing = reg.find_version_by_digest(client, name, digest)
    if existing is not None:
        # A retry after a crash between creating and checking: checked before any alias.
        _self_check(client, request.tracking_uri, existing, policy, signer, delete=False)
        return existing, False
    run_name = f"import-{digest[:12]}"
    for run_id in reg.close_abandoned_registration_runs(client, name, run_name):
        logger.warning("closed import run %s, left RUNNING by a killed import", run_id)
    run_id = reg.start_registration_run(
        client,
        training_run_id=None,
        experiment_name=config.experiment_name,
        artifact_root=artifact_location(request.tracking_uri, request.artifact_root),
        run_name=run_name,
        registered_model_name=name,
    )
    build = ImportInputs(
        config=config,
        model_dir=Path(request.model_dir),
        base=base,
        execution_id=request.execution_id,
        builder_id=config.builder_id or prov.default_builder_id(request.execution_id),
        started_on=datetime.now(UTC),
        source=source_info(request.project_root, config.source_repository),
        project_root=request.project_root,
        workflow_inputs=redact(dict(request.workflow_inputs or {})),
    )
    try:
        version = _publish(client, build, signer, run_id)
        _self_check(client, request.tracking_uri, version, policy, signer)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return version, True


def _publish(client: MlflowClient, build: ImportInputs, signer: Signer,
             run_id: str) -> ModelVersion:
    """Sign and attest, log model + attestations, create the version with its tags."""
    with tempfile.TemporaryDirectory(prefix="shipyard-import-") as tmp:
        attest_dir = Path(tmp) / reg.ATTESTATIONS_ARTIFACT_PATH
        attest_dir.mkdir()
        names = write_import_attestations(attest_dir, build, signer, run_id)
        digests = names.digests(attest_dir)
        client.log_artifacts(run_id, str(build.model_dir), reg.MODEL_ARTIFACT_PATH)
        client.log_artifacts(run_id, str(attest_dir), reg.ATTESTATIONS_ARTIFACT_PATH)
    run_tags = {reg.TAG_MODEL_DIGEST: build.model_digest, reg.TAG_IMPORTED: "true",
                reg.TAG_IMPORT_SOURCE: build.base.source, **base_tags(build.base)}
    for key, value in run_tags.items():
        client.set_tag(run_id, key, value)
    version = reg.create_version(
        client, name=build.config.registered_model_name, run_id=run_id,
        tags=_version_tags(build, signer, run_id, names, digests),
    )
    description = redact_text(import_description(build, str(version.version), signer.label))
    return client.update_model_version(version.name, version.version, description=description)


def _version_tags(build: ImportInputs, signer: Signer, run_id: str, names: Attestations,
                  digests: Mapping[str, str]) -> dict[str, str]:
    return redact({
        reg.TAG_MODEL_DIGEST: build.model_digest,
        reg.TAG_IMPORTED: "true",
        reg.TAG_IMPORT_SOURCE: build.base.source,
        **base_tags(build.base),
        **attestation_tags(build, signer, run_id, names, digests),
    })


def _import_policy(config: RegisterConfig, key_dir: Path, signer: Signer) -> Policy:
    """The policy evaluate and deploy apply (`register.policy_path`, else the local trust
    policy, else the packaged default), trusting the signer that is about to sign (like
    register's self-check): the imported version must pass it before it is the champion."""
    policy = load_policy(config.policy_path, keys_dir=key_dir)
    if signer.sigstore is not None:
        policy = dataclasses.replace(
            policy,
            sigstore_identity=signer.sigstore.identity,
            sigstore_oidc_issuer=signer.sigstore.oidc_issuer,
            sigstore_staging=signer.sigstore.staging,
        )
    if signer.key_pair is not None and signer.label not in policy.trusted_key_fingerprints:
        policy = dataclasses.replace(
            policy, trusted_key_fingerprints=(*policy.trusted_key_fingerprints, signer.label)
        )
    return policy


def _self_check(client: MlflowClient, tracking_uri: str, version: ModelVersion, policy: Policy,
                signer: Signer, *, delete: bool = True) -> None:
    """Verify `version` as evaluate and deploy will; delete it (if `delete`) when that fails."""
    uri = f"models:/{version.name}/{version.version}"
    public_key = signer.key_pair.public_key_path if signer.key_pair else None
    try:
        verify_model(uri, tracking_uri=tracking_uri, policy=policy, public_key=public_key)
    except RegistryError as exc:
        if delete:
            client.delete_model_version(version.name, version.version)
        outcome = "was deleted" if delete else "is left as it is, and no alias was moved"
        raise RegistryError(
            "SELF_CHECK_FAILED",
            f"imported {uri} failed verification against policy {policy.source} and "
            f"{outcome}: {exc.message}",
            check=exc.check,
            expected=exc.expected,
            found=exc.found,
        ) from exc


def _result(client: MlflowClient, version: ModelVersion, base: BaseModelRef, *, created: bool,
            champion: str | None, moved: bool) -> ImportResult:
    tags = dict(version.tags)
    name, number = str(version.name), str(version.version)
    return ImportResult(
        registered_model_name=name,
        version=number,
        model_uri=f"models:/{name}/{number}",
        model_digest=tags[reg.TAG_MODEL_DIGEST],
        created=created,
        champion_version=champion,
        champion_moved=moved,
        aliases=tuple(aliases_of(client, name, number)),
        signing_mode=tags.get(reg.TAG_SIGNING_MODE, ""),
        signer=tags.get(reg.TAG_SIGNER, ""),
        provenance_uri=tags.get(reg.TAG_PROVENANCE_URI, ""),
        provenance_sha256=tags.get(reg.TAG_PROVENANCE_SHA256, ""),
        mlflow_run_id=str(version.run_id),
        base=base,
    )
