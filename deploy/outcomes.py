"""The deploy stage's vocabulary, shared with the Flyte contract (`tasks.contracts`).

Kept apart from the stage code so that importing the contracts does not load the deploy
stack (and does not enter the cache key of tasks that never deploy). `DeploymentResult` is
defined here once: the stage returns it (with the decision record beside it, `DeployOutcome`)
and the Flyte contract is this very type (tasks/contracts.py re-exports it)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, TypeGuard

from common.digests import check_digest_fields

# The canary analysis verdict.
Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]

# -- action names ------------------------------------------------------------------------------
# Every action a deployment's decision records and history name, each spelled exactly once, in
# disjoint groups; every set of actions below is a union of these groups (Literals nest), so a
# name cannot be spelled two ways (tests/deploy/test_outcomes.py checks the relations).
# The canary moved the champion alias onto the model it deployed.
CanaryChampionMove = Literal["first_deployment", "promoted"]
# The canary was refused by the analysis: the champion stays, the history records the try.
RolledBack = Literal["rolled_back"]
# The model given is the champion already: nothing moved, nothing is recorded in the history.
AlreadyServing = Literal["already_serving"]
# By hand (deploy/operations.py): `shipyard serve` and `shipyard undo` make a version champion.
ManualAction = Literal["served", "undo"]
# A base model imported and made the first champion (deploy.history.import_base_as_champion):
# history only, there is no decision record since nothing was served or judged.
Imported = Literal["imported"]
# An engine that does not serve the evaluated model (deploy/parity.py): decision record only.
Refused = Literal["refused"]

# What the deploy did with the model it was given (the canary stage's result).
DeployAction = Literal[CanaryChampionMove, RolledBack, AlreadyServing]
# The `action` of a decision record (deploy/decision_record.py).
RecordAction = Literal[DeployAction, ManualAction, Refused]
# The `action` of a history line (deploy/history.py).
HistoryAction = Literal[CanaryChampionMove, RolledBack, ManualAction, Imported]
# History actions after which the champion alias names the entry's version.
ChampionAction = Literal[CanaryChampionMove, ManualAction, Imported]
# Every action name.
Action = Literal[RecordAction, Imported]

CHAMPION_ACTIONS: tuple[str, ...] = typing.get_args(ChampionAction)
# Decision-record actions that append a history line (deploy/session.py `append_history`):
# every history action but "imported" (written by the import itself, without a record).
RECORDED_ACTIONS: tuple[str, ...] = tuple(
    a for a in typing.get_args(HistoryAction) if a in typing.get_args(RecordAction))


def is_recorded(action: str) -> TypeGuard[HistoryAction]:
    """Whether a decision record with this action appends a history line (RECORDED_ACTIONS);
    for mypy, the action is then a HistoryAction."""
    return action in RECORDED_ACTIONS


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

    def __post_init__(self) -> None:
        check_digest_fields(self)  # DIGEST_INVALID naming the field, as every stage contract
