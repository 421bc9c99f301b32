"""The deploy action names have one owner (deploy/outcomes.py): every set of actions is a
union of its disjoint groups, and the relations the code relies on hold."""

from __future__ import annotations

import typing

import pytest

from deploy import history, outcomes
from deploy.outcomes import (
    Action,
    AlreadyServing,
    CanaryChampionMove,
    ChampionAction,
    DeployAction,
    HistoryAction,
    Imported,
    ManualAction,
    RecordAction,
    Refused,
    RolledBack,
)

GROUPS = (CanaryChampionMove, RolledBack, AlreadyServing, ManualAction, Imported, Refused)


def names(literal: object) -> set[str]:
    return set(typing.get_args(literal))


@pytest.mark.unit
def test_every_action_name_is_spelled_once_in_disjoint_groups() -> None:
    spelled = [name for group in GROUPS for name in typing.get_args(group)]
    assert len(spelled) == len(set(spelled))
    assert set(spelled) == names(Action)


@pytest.mark.unit
def test_the_canary_stage_returns_its_four_actions() -> None:
    # What deploy/stage.py returns and the Flyte contract carries (tasks/contracts.py).
    assert names(DeployAction) == {"first_deployment", "promoted", "rolled_back",
                                   "already_serving"}


@pytest.mark.unit
def test_the_history_records_every_deploy_action_but_already_serving() -> None:
    # already_serving moves nothing (deploy/session.py `append_history` skips it); a refused
    # engine is a decision record only; an import is a history line only (no record).
    assert names(DeployAction) - names(HistoryAction) == {"already_serving"}
    assert names(HistoryAction) - names(RecordAction) == {"imported"}
    assert names(RecordAction) - names(HistoryAction) == {"already_serving", "refused"}
    assert set(outcomes.RECORDED_ACTIONS) == names(HistoryAction) & names(RecordAction)
    assert "imported" not in outcomes.RECORDED_ACTIONS


@pytest.mark.unit
def test_champion_actions_are_the_history_actions_that_move_the_alias() -> None:
    assert set(outcomes.CHAMPION_ACTIONS) == names(ChampionAction)
    assert names(HistoryAction) - names(ChampionAction) == {"rolled_back"}
    assert names(ManualAction) <= names(ChampionAction)


@pytest.mark.unit
def test_the_history_uses_the_owners_names() -> None:
    assert history.HistoryAction is HistoryAction
    assert history.CHAMPION_ACTIONS is outcomes.CHAMPION_ACTIONS
    assert history.RECORDED_ACTIONS is outcomes.RECORDED_ACTIONS
