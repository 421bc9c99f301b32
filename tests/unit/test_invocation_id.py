"""The provenance's `invocationId` names the run, not flytekit's constant local execution."""

from __future__ import annotations

import pytest

from tasks import flyte_adapter, register

pytestmark = pytest.mark.unit


def test_local_runs_record_their_own_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(register, "execution_id", lambda: "local:local:local")
    monkeypatch.setattr(register, "is_remote_execution", lambda: False)
    monkeypatch.setenv(flyte_adapter.LOCAL_RUN_ENV, "")  # restored afterwards
    first = register.invocation_id()
    assert first.startswith("local:local:local-") and first != "local:local:local"
    assert register.invocation_id() == first  # one id for the whole run
    assert first.rpartition(":")[2] == flyte_adapter.run_id()  # = reports/<run id>/


def test_cluster_runs_record_the_flyte_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(register, "execution_id", lambda: "shipyard:development:f3a9c2")
    monkeypatch.setattr(register, "is_remote_execution", lambda: True)
    assert register.invocation_id() == "shipyard:development:f3a9c2"
