"""The deploy stage's vocabulary, shared with the Flyte contract (`tasks.contracts`).

Kept apart from the stage code so that importing the contracts does not load the deploy
stack (and does not enter the cache key of tasks that never deploy). `DeploymentResult` is
defined here once: the stage returns it (with the decision record beside it, `DeployOutcome`)
and the Flyte contract is this very type (tasks/contracts.py re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The canary analysis verdict.
Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]
# What the deploy did with the model it was given.
DeployAction = Literal["first_deployment", "promoted", "rolled_back", "already_serving"]


@dataclass(frozen=True)
class DeploymentResult:
    # The outcome of `deploy_canary` (docs/stages/deploy_canary.md). The decision record holds
    # every number behind it; `endpoint` is where the served model answers.
    deployment_name: str
    model_uri: str
    # model-signing root digest of the version deployed (verified before serving)
    model_digest: str
    # PASS, FAIL or INCONCLUSIVE
    outcome: Outcome
    # first_deployment, promoted, rolled_back or already_serving
    action: DeployAction
    # vllm or local; local backend or kubernetes
    engine: str
    backend: str
    # OpenAI-compatible base URL (router on loopback, or the Gateway); append /v1
    endpoint: str
    served_model_name: str
    # MLflow `champion` version after the stage (None when there is none)
    champion_version: str | None
    # the decision record: local JSON path and its MLflow artifact URI (None if not logged)
    decision_record_path: str
    decision_record_uri: str | None
    # how to stop what the stage left running
    stop_command: str
