"""Flyte task `deploy_canary`: RegisteredModel + DeployConfig -> DeploymentResult (a thin shell
over `deploy.stage.deploy_canary`).

Run locally, the promoted servers (router + stable engine) stay up after the task returns,
detached; `shipyard status|stop` shows and stops them.
"""

from __future__ import annotations

from flytekit import Resources, task

from common.cost import CostConfig, throughput_from_load
from common.digests import sha256_digest
from common.settings import load_settings
from deploy.config import DeployConfig
from tasks import timeouts
from tasks.contracts import DeploymentResult, RegisteredModel
from tasks.flyte_adapter import MLFLOW_SECRETS, STAGE_DECK_FIELDS
from tasks.shell import stage_shell

_STAGE = "deploy_canary"
_TITLE = "Canary deployment"


# Not cached and not retried: a deploy acts on live traffic and the registry's aliases.
@task(
    timeout=timeouts.DEPLOY,
    cache=False,
    retries=0,
    enable_deck=True,
    deck_fields=STAGE_DECK_FIELDS,
    requests=Resources(cpu="1", mem="4Gi"),
    limits=Resources(cpu="2", mem="12Gi"),
    secret_requests=MLFLOW_SECRETS,  # the registry: verification, aliases, decision record
)
def deploy_canary(model: RegisteredModel, config: DeployConfig,
                  prices: CostConfig) -> DeploymentResult:
    # the deploy stack (MLflow, scipy, the engines) loads when the task runs, not at import
    from deploy.model_ref import ModelToDeploy
    from deploy.report import overview_facts, report_html
    from deploy.stage import deploy_canary as run_deploy

    with stage_shell(_STAGE, _TITLE, prices) as run:
        request = ModelToDeploy(model.registered_model_name, model.version,
                                sha256_digest(model.model_digest, "RegisteredModel.model_digest"),
                                model.mlflow_run_id or None)
        outcome = run_deploy(request, config, load_settings())
        # $ per 1M generated tokens, from the throughput the rollout's load measured
        run.cost.serving_tokens_per_second = throughput_from_load(outcome.record.load)
        run.cost.mlflow_run_id = model.mlflow_run_id or None
        run.cost.mlflow_tracking_uri = load_settings().mlflow_tracking_uri
        run.publish(report_html(outcome.record),
                    status="succeeded" if outcome.outcome == "PASS" else "failed",
                    facts=overview_facts(outcome.record))
        return outcome.result()
