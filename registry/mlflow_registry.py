"""MLflow side of registration: the run that holds the artifacts, the version and its tags
(its aliases are `registry.aliases`'s).

Everything goes through an explicit `MlflowClient(tracking_uri)`, never the fluent API's
process-wide tracking URI, so a registration cannot write to a store it was not given.
Artifacts are addressed as `runs:/RUN_ID/PATH` URIs: they resolve through whatever store
or proxy the tracking URI leads to, locally and on a tracking server alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Run, RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from registry.errors import RegistryError

MODEL_ARTIFACT_PATH = "model"
ATTESTATIONS_ARTIFACT_PATH = "attestations"

# Model version tags. `model_digest` is also the idempotency key.
TAG_MODEL_DIGEST = "model_digest"
TAG_DATASET_DIGEST_PREFIX = "dataset_digest."
TAG_CONFIG_DIGEST = "config_digest"
TAG_SOURCE_REPOSITORY = "source_repository"
TAG_SOURCE_COMMIT = "source_commit"
TAG_SOURCE_DIRTY = "source_dirty"
TAG_EXECUTION_ID = "flyte_execution_id"
TAG_BUILDER_ID = "builder_id"
TAG_TRAINING_RUN_ID = "training_run_id"
TAG_EVAL_SUMMARY = "eval_summary"
TAG_EVAL_GATE = "eval_gate"
TAG_SIGNING_MODE = "signing_mode"
TAG_SIGNER = "signer"
TAG_SIGNATURE_URI = "signature_uri"
TAG_SIGNATURE_SHA256 = "signature_sha256"
TAG_PROVENANCE_URI = "provenance_uri"
TAG_PROVENANCE_SHA256 = "provenance_sha256"
TAG_SBOM_URI = "sbom_uri"
TAG_SBOM_SHA256 = "sbom_sha256"
# an imported base model (registry/imports.py): "true", and the source it came from
TAG_IMPORTED = "shipyard.imported"
TAG_IMPORT_SOURCE = "shipyard.import.source"
# on a registration run: the registered model it registers into (finds runs a kill left)
TAG_RUN_REGISTERED_MODEL = "shipyard.registered_model_name"
# Tag values end up in a database column; keep free text well under every backend's limit.
MAX_TAG_VALUE_CHARS = 5000
# MLflow stores a dataset digest in a 36-character column: the full sha256 goes in a tag.
_DATASET_DIGEST_CHARS = 32


@dataclass(frozen=True)
class DatasetRef:
    uri: str
    sha256: str


def client_for(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def run_artifact_uri(run_id: str, path: str) -> str:
    return f"runs:/{run_id}/{path}"


def parse_run_artifact_uri(uri: str) -> tuple[str, str]:
    """`runs:/RUN_ID/PATH` -> (RUN_ID, PATH); anything else is an error."""
    rest = uri.removeprefix("runs:/")
    run_id, _, path = rest.partition("/")
    if rest == uri or not run_id or not path:
        raise RegistryError("ARTIFACT_URI_INVALID", f"{uri!r} is not a runs:/RUN_ID/PATH URI.")
    return run_id, path


def find_version_by_digest(
    client: MlflowClient, name: str, model_digest: str
) -> ModelVersion | None:
    """The oldest version of `name` registered for `model_digest`, if any."""
    versions = client.search_model_versions(
        f"name = '{_quote(name)}' and tags.{TAG_MODEL_DIGEST} = '{_quote(model_digest)}'"
    )
    return min(versions, key=lambda v: int(v.version)) if versions else None


def get_training_run(client: MlflowClient, training_run_id: str) -> Run:
    """The training run the model came from; TRAINING_RUN_NOT_FOUND if this store lacks it."""
    try:
        return client.get_run(training_run_id)
    except MlflowException as exc:
        raise RegistryError(
            "TRAINING_RUN_NOT_FOUND",
            f"training run {training_run_id!r} is not in this tracking store; register "
            "against the MLflow the train stage logged to (MLFLOW_TRACKING_URI).",
        ) from exc


def start_registration_run(
    client: MlflowClient,
    *,
    training_run_id: str | None,
    experiment_name: str,
    artifact_root: str | None,
    run_name: str,
    registered_model_name: str,
) -> str:
    """Create the run holding the registered artifacts; nested under the training run."""
    tags = {"shipyard.stage": "register", TAG_RUN_REGISTERED_MODEL: registered_model_name}
    if training_run_id is not None:
        experiment_id = get_training_run(client, training_run_id).info.experiment_id
        tags[MLFLOW_PARENT_RUN_ID] = training_run_id
    else:
        experiment_id = _ensure_experiment(client, experiment_name, artifact_root)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    return str(run.info.run_id)


def log_datasets(client: MlflowClient, run_id: str, datasets: Mapping[str, DatasetRef]) -> None:
    """Dataset lineage: one MLflow dataset input per split, with its full sha256."""
    inputs = []
    for split, ref in sorted(datasets.items()):
        # MetaDataset records where the data is and its digest, without loading it; mypy
        # sees an abstract `profile` that MLflow's class leaves unimplemented on purpose.
        dataset = MetaDataset(  # type: ignore[abstract]
            source=_dataset_source(ref.uri),
            name=split,
            digest=ref.sha256[:_DATASET_DIGEST_CHARS],
        )
        inputs.append(
            DatasetInput(
                dataset=dataset._to_mlflow_entity(),
                tags=[InputTag(MLFLOW_DATASET_CONTEXT, split), InputTag("sha256", ref.sha256)],
            )
        )
    # This is what mlflow.log_input does, minus its reliance on the global active run.
    client.log_inputs(run_id, datasets=inputs)


def create_version(
    client: MlflowClient, *, name: str, run_id: str, tags: Mapping[str, str]
) -> ModelVersion:
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException:  # created meanwhile by a concurrent registration
            client.get_registered_model(name)
    # A plain directory of files is registered through its run artifact URI; MLflow 3's
    # register_model only accepts directories logged as a model flavor.
    return client.create_model_version(
        name=name,
        source=run_artifact_uri(run_id, MODEL_ARTIFACT_PATH),
        run_id=run_id,
        tags=dict(tags),
    )


def download(client: MlflowClient, uri: str, dst_dir: Path) -> Path:
    run_id, path = parse_run_artifact_uri(uri)
    dst_dir.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, dst_path=str(dst_dir)))


def truncate_tag(value: str) -> str:
    if len(value) <= MAX_TAG_VALUE_CHARS:
        return value
    return value[: MAX_TAG_VALUE_CHARS - 14] + "...[truncated]"


def _ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created meanwhile by a concurrent registration
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _dataset_source(uri: str) -> DatasetSource:
    try:
        with warnings.catch_warnings():
            # MLflow registers the local source type twice and warns that a path is
            # "ambiguous" between the two identical candidates; nothing for a user to act on.
            warnings.filterwarnings("ignore", message="The specified dataset source can be")
            return resolve_dataset_source(uri)
    except MlflowException:
        # A URI scheme MLflow has no source type for still gets recorded, verbatim.
        return CodeDatasetSource(tags={"uri": uri})


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def close_abandoned_registration_runs(client: MlflowClient, name: str, run_name: str) -> list[str]:
    """Mark KILLED the registration runs of `name` called `run_name` still RUNNING: a
    register killed with SIGKILL leaves its run so. Call it holding the registration lock of
    `name` (no live registration of `name` can then be running). Returns their ids."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(experiments, filter_string=(
        f"tags.`shipyard.stage` = 'register' and tags.`{TAG_RUN_REGISTERED_MODEL}` = "
        f"'{name}' and attributes.run_name = '{run_name}' and attributes.status = 'RUNNING'"))
    closed = []
    for run in runs:
        client.set_tag(run.info.run_id, "shipyard.abandoned",
                       "left RUNNING by a register that was killed; closed by a later one")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        closed.append(str(run.info.run_id))
    return closed
