"""Decision records for tests, built the way the deploy builds them (deploy.decision_record)."""

from __future__ import annotations

from common.digests import sha256_digest
from deploy.config import DeployConfig
from deploy.decision_record import start_record
from deploy.decision_record_schema import ChampionMove, DecisionRecord, RecordAction
from deploy.model_ref import ModelToDeploy
from deploy.outcomes import Outcome


def finished_record(model_uri: str, action: RecordAction = "promoted", outcome: Outcome = "PASS",
                    *, deployment: str = "demo", config: DeployConfig | None = None,
                    endpoint: str = "http://127.0.0.1:8000") -> DecisionRecord:
    """A record as `DeploySession.finish` writes it, for model `models:/NAME/VERSION`."""
    name, version = model_uri.removeprefix("models:/").split("/")
    record = start_record(deployment, ModelToDeploy(name, version, sha256_digest("ab" * 32), None),
                          config or DeployConfig())
    record.champion = ChampionMove(before=None, after=version, moved=outcome == "PASS")
    record.finish(outcome, action, endpoint, {})
    return record
