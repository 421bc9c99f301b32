"""The `register` stage as a plain function: check, sign, attest, register, self-verify.

Order matters for "nothing half-written looks valid": the inputs are checked before any
work; the signature and provenance exist before MLflow sees anything; the new version is
verified with the same `verify_model` deploy uses before it gets the `challenger` alias, and
deleted if that fails. Registering a digest that already has a version returns that version,
and its eval report (a new evaluation, e.g. against a newer champion) is added to it as its
own signed eval attestation; the older ones stay (`add_evaluation`). Two registrations of
one digest at once cannot both create one: on a local store (sqlite file or directory) the
look-up and the creation run under a file lock next to the store (`registration_lock`). A
remote tracking server has no lock we can take: two concurrent registrations of one digest
on different machines can still create two versions (MLflow has no unique constraint on
tags); run one registration per model at a time there (Flyte's cache and the workflow's
single register task do), and verify by digest (`--expected-digest`).

Modules: register_inputs.py (the checks before any work, the signer), register_store.py (the
registration lock, MLflow errors, artifact location), register_tags.py (the version's tags),
register_evaluation.py (a later evaluation of a registered digest); this module runs them in
the order above, publishes and self-checks the version, and keeps the public API.
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
from registry import eval_attestation
from registry import mlflow_registry as reg
from registry import provenance as prov
from registry.aliases import aliases_of, set_challenger
from registry.attest import BuildInputs, Signer, write_attestations
from registry.base_model import BaseModelRef, base_tags
from registry.config import RegisterConfig
from registry.description import version_description
from registry.errors import RegistryError
from registry.policy import Policy, load_policy
from registry.register_evaluation import add_evaluation
from registry.register_inputs import (
    check_base_model,
    check_inputs,
    make_signer,
    recorded_dataset_uris,
)
from registry.register_store import (
    artifact_location,
    mlflow_errors,
    registration_lock,
    run_start,
)
from registry.register_tags import attestation_tags, version_tags
from registry.source import source_info
from registry.verify import verify_model

# The public API, wherever each part now lives (registry/imports.py, tasks/register.py and
# the tests import from here).
__all__ = [
    "RegistrationRequest",
    "RegistrationResult",
    "attestation_tags",
    "register_model",
    "registration_lock",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationResult:
    registered_model_name: str
    version: str
    # models:/NAME/VERSION: the immutable address; the alias can move, this cannot.
    model_uri: str
    model_digest: str
    # False when this digest was already registered and that version was returned.
    created: bool
    aliases: tuple[str, ...]
    signing_mode: str
    # "sha256:<public key fingerprint>" in key mode, the OIDC identity in sigstore mode.
    signer: str
    signature_uri: str
    signature_sha256: str
    provenance_uri: str
    provenance_sha256: str
    sbom_uri: str
    sbom_sha256: str
    builder_id: str
    source_repository: str
    source_commit: str
    mlflow_run_id: str


@dataclass(frozen=True, kw_only=True)
class RegistrationRequest:
    """Everything `register_model` needs: the trained model and the evidence about it, the
    registry to write to, and where the build ran. Checked before any work is done."""

    # HF model directory the train stage wrote, and its model-signing root digest
    # (common.digests.model_root_digest); the files must still hash to it.
    model_dir: Path
    model_digest: str
    # sha256 of each dataset split the model was trained on, by split name
    dataset_digests: Mapping[str, str]
    # local copies of those splits (same split names); each must hash to its digest
    dataset_files: Mapping[str, Path]
    # sha256 of `resolved_config_json`, the JSON of the resolved TrainConfig
    config_digest: str
    resolved_config_json: str
    # MLflow run of training: the registration run nests under it; None when there is none
    training_run_id: str | None
    # the evaluate stage's JSON report (may carry "gate_outcome": "PASS"/"FAIL" and
    # "summary"); None when the model was not evaluated
    eval_report: Mapping[str, Any] | None
    # registered model name, signing mode, policy, builder and source settings
    config: RegisterConfig
    # MLflow tracking URI; `artifact_root` is where a local store keeps artifacts
    # (ignored by a tracking server, which decides itself)
    tracking_uri: str
    artifact_root: Path | str | None
    # signing key directory in key mode when `config.key_dir` is None
    key_dir: Path
    # the orchestrator's execution id (Flyte's, or "local:..."), recorded in the provenance
    execution_id: str
    # when the build started; None: the training run's start (or now, without one)
    started_on: datetime | None = None
    # where the dataset splits live, by split name (recorded); None: the local paths
    dataset_uris: Mapping[str, str] | None = None
    # the source checkout (commit, lockfile); None: not recorded
    project_root: Path | None = None
    # the workflow's own inputs, recorded as the provenance's external parameters
    workflow_inputs: Mapping[str, Any] | None = None
    # the base model fine-tuned from (a resolved dependency in the provenance); None: none
    base_model_dir: Path | None = None
    # its identity, `training.pretrained.BaseModelIdentity.to_json()` (or that dict): the
    # provenance names the base directory, GGUF and wheel, and the version is tagged
    # `shipyard.base.*`; with `base_model_dir` too, that directory must hash to its digest
    base_model_identity: str | Mapping[str, Any] | None = None
    # Shipyard's claims about the eval gate's checks, signed into the eval attestation
    # (eval.summary.attestation_claims of `eval_report`); None: only the report's own fields
    eval_claims: Mapping[str, Any] | None = None


def register_model(request: RegistrationRequest) -> RegistrationResult:
    """Register `request.model_dir` as a signed, attested MLflow model version."""
    stage_started = datetime.now(UTC)
    model_dir = Path(request.model_dir)
    check_inputs(
        model_dir,
        request.model_digest,
        request.dataset_digests,
        request.dataset_files,
        request.config_digest,
        request.resolved_config_json,
    )
    # an eval report about another model is refused before any work
    eval_attestation.check_report_is_about(request.eval_report, request.model_digest)
    base = check_base_model(request.base_model_identity, request.base_model_dir)
    config = request.config
    client = reg.client_for(request.tracking_uri)
    signer = make_signer(config, Path(config.key_dir) if config.key_dir else Path(request.key_dir))
    # SIGTERM (Flyte stopping the pod) raises StageInterrupted: the registration run is
    # marked FAILED instead of staying RUNNING; a version already created is complete (its
    # tags are written with it) and the re-run checks it before it becomes the challenger.
    with signals_raise_stage_interrupted(), \
            registration_lock(request.tracking_uri, config.registered_model_name):
        return _register_locked(request, client, signer, stage_started, base)


def _register_locked(
    request: RegistrationRequest, client: MlflowClient, signer: Signer, stage_started: datetime,
    base: BaseModelRef | None,
) -> RegistrationResult:
    config, model_digest, model_dir = request.config, request.model_digest, Path(request.model_dir)
    training_run_id, tracking_uri = request.training_run_id, request.tracking_uri
    name = config.registered_model_name
    with mlflow_errors(tracking_uri):
        build = BuildInputs(
            config=config,
            model_dir=model_dir,
            model_digest=model_digest,
            dataset_digests=dict(request.dataset_digests),
            dataset_uris=recorded_dataset_uris(request.dataset_files, request.dataset_uris),
            config_digest=request.config_digest,
            resolved_config_json=request.resolved_config_json,
            training_run_id=training_run_id,
            # redacted: the report is logged as a byproduct and summarised in tags
            eval_report=redact(request.eval_report),
            execution_id=request.execution_id,
            builder_id=config.builder_id or prov.default_builder_id(request.execution_id),
            started_on=request.started_on or run_start(client, training_run_id, stage_started),
            source=source_info(request.project_root, config.source_repository),
            project_root=request.project_root,
            workflow_inputs=request.workflow_inputs,
            base_model_dir=request.base_model_dir,
            eval_claims=request.eval_claims,
            base_model=base,
        )
        run_name = f"register-{model_digest[:12]}"
        for run_id in reg.close_abandoned_registration_runs(client, name, run_name):
            logger.warning("closed registration run %s, left RUNNING by a killed register",
                           run_id)
        existing = reg.find_version_by_digest(client, name, model_digest)
        if existing is not None:
            # A retry may follow a crash between creating the version and checking it: the
            # existing version gets the same check before it may become the challenger, and
            # the description a crash left out is written now.
            builder = existing.tags.get(reg.TAG_BUILDER_ID, "")
            if build.eval_report is not None:
                add_evaluation(client, existing, build, signer)
            _self_check(client, tracking_uri, existing, config, builder, signer, delete=False)
            if not (existing.description or "").strip():
                _describe(client, build, existing, signer)
            set_challenger(client, name, str(existing.version), config.champion_alias)
            logger.info("%s sha256:%s is already version %s", name, model_digest, existing.version)
            return _result(client, existing, created=False)

        run_id = reg.start_registration_run(
            client,
            training_run_id=training_run_id,
            experiment_name=config.experiment_name,
            artifact_root=artifact_location(tracking_uri, request.artifact_root),
            run_name=run_name,
            registered_model_name=name,
        )
        try:
            version = _publish(client, build, signer, run_id)
            _self_check(client, tracking_uri, version, config, build.builder_id, signer)
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        set_challenger(client, name, str(version.version), config.champion_alias)
        result = _result(client, client.get_model_version(name, version.version), created=True)
    print(
        f"[shipyard] registered {name} version {result.version} sha256:{model_digest} "
        f"aliases={list(result.aliases)} signer={signer.label}",
        flush=True,
    )
    return result


def _publish(client: MlflowClient, build: BuildInputs, signer: Signer, run_id: str) -> ModelVersion:
    """Sign and attest, log model + attestations + dataset inputs, create the version."""
    with tempfile.TemporaryDirectory(prefix="shipyard-register-") as tmp:
        attest_dir = Path(tmp) / reg.ATTESTATIONS_ARTIFACT_PATH
        attest_dir.mkdir()
        names = write_attestations(attest_dir, build, signer, run_id)
        digests = names.digests(attest_dir)
        client.log_artifacts(run_id, str(build.model_dir), reg.MODEL_ARTIFACT_PATH)
        client.log_artifacts(run_id, str(attest_dir), reg.ATTESTATIONS_ARTIFACT_PATH)
    reg.log_datasets(
        client,
        run_id,
        {
            split: reg.DatasetRef(uri=uri, sha256=build.dataset_digests[split])
            for split, uri in build.dataset_uris.items()
        },
    )
    client.set_tag(run_id, reg.TAG_MODEL_DIGEST, build.model_digest)
    for key, value in (base_tags(build.base_model) if build.base_model else {}).items():
        client.set_tag(run_id, key, value)
    tags = version_tags(build, signer, run_id, names, digests)
    version = reg.create_version(
        client, name=build.config.registered_model_name, run_id=run_id, tags=tags
    )
    return _describe(client, build, version, signer)

def _describe(client: MlflowClient, build: BuildInputs, version: ModelVersion,
              signer: Signer) -> ModelVersion:
    """The text people read first in the MLflow UI: gate, digest, data, how to verify."""
    description = redact_text(version_description(build, str(version.version), signer.label))
    return client.update_model_version(version.name, version.version, description=description)


def _self_check(
    client: MlflowClient,
    tracking_uri: str,
    version: ModelVersion,
    config: RegisterConfig,
    builder_id: str,
    signer: Signer,
    *,
    delete: bool = True,
) -> None:
    """Verify `version` exactly as deploy will; delete it (if `delete`) when that fails.

    Without a policy file the check trusts `builder_id`, so it still proves that the
    signatures, digests and tags agree.
    """
    policy = (
        load_policy(config.policy_path)
        if config.policy_path
        else Policy(allowed_builder_ids=(builder_id or "<none>",), source="<the builder>")
    )
    if signer.sigstore is not None:
        policy = dataclasses.replace(
            policy,
            sigstore_identity=signer.sigstore.identity,
            sigstore_oidc_issuer=signer.sigstore.oidc_issuer,
            sigstore_staging=signer.sigstore.staging,
        )
    if signer.key_pair is not None:  # like the identity above: the key that just signed
        policy = dataclasses.replace(
            policy, trusted_key_fingerprints=(*policy.trusted_key_fingerprints, signer.label)
        )
    uri = f"models:/{version.name}/{version.version}"
    public_key = signer.key_pair.public_key_path if signer.key_pair else None
    try:
        verify_model(uri, tracking_uri=tracking_uri, policy=policy, public_key=public_key)
    except RegistryError as exc:
        if delete:
            client.delete_model_version(version.name, version.version)
        outcome = "was deleted" if delete else "is left as it is, without the challenger alias"
        raise RegistryError(
            "SELF_CHECK_FAILED",
            f"{uri} failed verification at registration and {outcome}: {exc.message}",
            check=exc.check,
            expected=exc.expected,
            found=exc.found,
        ) from exc


def _result(client: MlflowClient, version: ModelVersion, *, created: bool) -> RegistrationResult:
    tags = dict(version.tags)
    name, number = str(version.name), str(version.version)
    return RegistrationResult(
        registered_model_name=name,
        version=number,
        model_uri=f"models:/{name}/{number}",
        model_digest=tags[reg.TAG_MODEL_DIGEST],
        created=created,
        aliases=tuple(aliases_of(client, name, number)),
        signing_mode=tags.get(reg.TAG_SIGNING_MODE, ""),
        signer=tags.get(reg.TAG_SIGNER, ""),
        signature_uri=tags.get(reg.TAG_SIGNATURE_URI, ""),
        signature_sha256=tags.get(reg.TAG_SIGNATURE_SHA256, ""),
        provenance_uri=tags.get(reg.TAG_PROVENANCE_URI, ""),
        provenance_sha256=tags.get(reg.TAG_PROVENANCE_SHA256, ""),
        sbom_uri=tags.get(reg.TAG_SBOM_URI, ""),
        sbom_sha256=tags.get(reg.TAG_SBOM_SHA256, ""),
        builder_id=tags.get(reg.TAG_BUILDER_ID, ""),
        source_repository=tags.get(reg.TAG_SOURCE_REPOSITORY, ""),
        source_commit=tags.get(reg.TAG_SOURCE_COMMIT, ""),
        mlflow_run_id=str(version.run_id),
    )
