"""Flyte task `import_base_champion`: the provisioned base as the registered model's first
champion (a thin shell over `deploy.history.import_base_as_champion`)."""

from __future__ import annotations

from pathlib import Path

from flytekit import Resources, task

from common.settings import PROJECT_ROOT, load_settings
from deploy.config import DeployConfig
from registry.config import RegisterConfig
from registry.model_uri import ModelReference
from tasks import timeouts
from tasks.contracts import BaseModel
from tasks.flyte_adapter import MLFLOW_SECRETS, STAGE_DECK_FIELDS, quiet_console


# Never cached: whether the registered model has a champion is a fact about the live registry.
# Import is idempotent by digest and never moves a champion that exists.
@task(cache=False, retries=2, timeout=timeouts.REGISTER, enable_deck=False,
      deck_fields=STAGE_DECK_FIELDS, requests=Resources(cpu="1", mem="2Gi"),
      secret_requests=MLFLOW_SECRETS)
def import_base_champion(base: BaseModel | None, register_config: RegisterConfig,
                         deploy_config: DeployConfig) -> ModelReference | None:
    """Register the base model as its own, signed, imported version and make it the first
    champion when the registered model has none, so the first fine-tune is gated against its
    base and canaried against it. Returns the imported version pinned to its digest, or None
    when there is no base."""
    if base is None:
        return None
    # MLflow and model-signing load when the task runs, not at import
    from deploy.history import import_base_as_champion
    from registry.imports import ImportRequest
    from tasks.register import invocation_id

    quiet_console()
    settings = load_settings()
    request = ImportRequest(
        # import_base_model hashes the directory against the identity's digest before it
        # signs anything: the check lives there, not here again (538 MB hashed once, not twice)
        model_dir=Path(base.model_dir.download()), base_model_identity=base.identity.to_json(),
        config=register_config, tracking_uri=settings.mlflow_tracking_uri,
        artifact_root=settings.mlflow_artifact_root, key_dir=settings.keys_dir,
        execution_id=invocation_id(), project_root=PROJECT_ROOT)
    result, entry = import_base_as_champion(request, settings, deploy_config.deployment_name)
    state = ("imported as the first champion" if result.champion_moved else
             f"registered (champion stays version {result.champion_version})" if result.created
             else f"already registered (champion: version {result.champion_version})")
    recorded = "; recorded in the signed champion history" if entry is not None else ""
    print(f"[shipyard] base model {base.identity.source}: {result.model_uri} {state}{recorded}")
    return ModelReference(result.registered_model_name, result.version, result.model_digest)
