"""Flyte task `register`: TrainedModel + ValidatedDataset -> RegisteredModel (a thin shell over
`registry.stage.register_model`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from flytekit import Resources, task

from common.cost import CostConfig
from common.html import StageFacts, key_value_table, short_digest
from common.settings import PROJECT_ROOT, Settings, load_settings
from registry.config import RegisterConfig
from registry.errors import RegistryError
from tasks import timeouts
from tasks.contracts import (
    BaseModel,
    EvalReport,
    RegisteredModel,
    TrainedModel,
    ValidatedDataset,
    from_result,
)
from tasks.flyte_adapter import (
    MLFLOW_SECRETS,
    STAGE_DECK_FIELDS,
    execution_id,
    is_remote_execution,
    run_id,
)
from tasks.shell import stage_shell

if TYPE_CHECKING:
    from registry.stage import RegistrationRequest, RegistrationResult

_STAGE = "register"


def invocation_id() -> str:
    """What the provenance records as `invocationId`: the Flyte execution on a cluster, and
    locally `local:local:<run id>`, the run whose reports live in `reports/<run id>/`
    (flytekit names every local execution just `local`)."""
    return execution_id() if is_remote_execution() else f"local:local:{run_id()}"
_REPORT_TITLE = "Model registration"


# Not cached: whether a version exists is a fact about the live registry, not about the
# inputs; registration is idempotent by model digest, so retries and reruns are safe.
@task(
    timeout=timeouts.REGISTER,
    cache=False,
    retries=2,
    enable_deck=True,
    deck_fields=STAGE_DECK_FIELDS,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
    secret_requests=MLFLOW_SECRETS,
)
def register(
    model: TrainedModel, dataset: ValidatedDataset, config: RegisterConfig,
    prices: CostConfig, evaluation: EvalReport | None = None, base: BaseModel | None = None,
) -> RegisteredModel:
    """`evaluation` is the eval stage's report: it becomes the signed eval attestation (an
    in-toto test-result about the model digest) that the verifier's eval policy reads.
    `base`: the provisioned model it was fine-tuned from; its identity (package, wheel and
    GGUF digests, licence) goes into the provenance's resolvedDependencies and MLflow."""
    # MLflow, model-signing and the eval stack load when the task runs, not at import
    from registry.stage import register_model

    with stage_shell(_STAGE, _REPORT_TITLE, prices) as run:
        settings = load_settings()
        result = register_model(_request(model, dataset, config, evaluation, base, settings))
        run.cost.mlflow_run_id = result.mlflow_run_id or None
        run.cost.mlflow_tracking_uri = settings.mlflow_tracking_uri
        run.publish(_report_html(result), facts=_overview_facts(result, evaluation))
        return _registered_model(result)


def _request(model: TrainedModel, dataset: ValidatedDataset, config: RegisterConfig,
             evaluation: EvalReport | None, base: BaseModel | None,
             settings: Settings) -> RegistrationRequest:
    from eval.summary import attestation_claims
    from registry.stage import RegistrationRequest

    data_dir = Path(dataset.files.download())
    splits = sorted(model.dataset_digests)
    remote = dataset.files.remote_source
    eval_report = _eval_report(evaluation, model.model_digest)
    return RegistrationRequest(
        model_dir=Path(model.model_dir.download()),
        model_digest=model.model_digest,
        dataset_digests=model.dataset_digests,
        dataset_files={split: data_dir / f"{split}.jsonl" for split in splits},
        dataset_uris={s: f"{str(remote).rstrip('/')}/{s}.jsonl" for s in splits}
        if remote
        else None,
        config_digest=model.config_digest,
        resolved_config_json=model.config.to_json(),  # its digest is checked against train's
        training_run_id=model.mlflow_run_id or None,
        eval_report=eval_report,
        eval_claims=attestation_claims(eval_report) if eval_report is not None else None,
        config=config,
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_root=settings.mlflow_artifact_root,
        key_dir=settings.keys_dir,
        execution_id=invocation_id(),
        project_root=PROJECT_ROOT,
        # with a provisioned base its recorded identity stands for it (re-hashing the
        # directory again here would only repeat what train checked)
        base_model_dir=None if base is not None
        else _base_model_dir(model.config.base_model_dir),
        base_model_identity=base.identity.to_json() if base is not None else None,
    )


def _registered_model(result: RegistrationResult) -> RegisteredModel:
    return from_result(RegisteredModel, result, aliases=list(result.aliases),
                       signature_digest=result.signature_sha256,
                       provenance_digest=result.provenance_sha256,
                       sbom_digest=result.sbom_sha256)


def _eval_report(evaluation: EvalReport | None, model_digest: str) -> dict | None:
    if evaluation is None:
        return None
    if evaluation.model_digest != model_digest:  # fail closed: a report about another model
        raise RegistryError(
            "EVAL_REPORT_MISMATCH",
            f"the eval report is about model {evaluation.model_digest}, not the model being "
            f"registered ({model_digest}). Evaluate this model before registering it.",
        )
    report = json.loads(Path(evaluation.report_json.download()).read_text())
    if not isinstance(report, dict) or report.get("gate_outcome") != evaluation.gate_outcome:
        raise RegistryError(
            "EVAL_REPORT_MISMATCH",
            "the eval report JSON does not carry the gate outcome the stage returned "
            f"({evaluation.gate_outcome}). Re-run the evaluate stage.",
        )
    return report


def _base_model_dir(value: str | None) -> Path | None:
    # Relative paths in the train config resolve against the project root, as training did.
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


def _report_rows(result: RegistrationResult) -> list[tuple[str, str]]:
    return [
        ("model", f"{result.model_uri} (aliases: {', '.join(result.aliases) or 'none'})"),
        ("new version", "yes" if result.created else "no: this digest was already registered"),
        ("model digest", f"sha256:{result.model_digest}"),
        ("signing", f"{result.signing_mode}, signer {result.signer}"),
        ("signature", f"{result.signature_uri} (sha256:{result.signature_sha256})"),
        ("provenance", f"{result.provenance_uri} (sha256:{result.provenance_sha256})"),
        ("SBOM", f"{result.sbom_uri} (sha256:{result.sbom_sha256})"),
        ("builder", result.builder_id),
        ("source", f"{result.source_repository} @ {result.source_commit}"),
        ("MLflow run", result.mlflow_run_id),
        ("verify", _verify_command(result)),
    ]


def _verify_command(result: RegistrationResult) -> str:
    return f"shipyard verify {result.model_uri} --expected-digest sha256:{result.model_digest}"


def _report_html(result: RegistrationResult) -> str:
    return key_value_table(_report_rows(result))


def _overview_facts(result: RegistrationResult, evaluation: EvalReport | None) -> StageFacts:
    new = "new version" if result.created else "already registered"
    headline = f"{result.model_uri} ({new}), {short_digest(result.model_digest)}"
    facts = [("version", result.model_uri), ("digest", f"sha256:{result.model_digest}"),
             ("aliases", ", ".join(result.aliases) or "none"),
             ("eval gate", evaluation.gate_outcome if evaluation else "not evaluated"),
             ("signed by", f"{result.signing_mode}, {result.signer}"),
             ("verify", _verify_command(result))]
    return StageFacts(headline=headline, facts=facts)
