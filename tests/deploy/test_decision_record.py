"""The decision record's typed schema: the committed JSON Schema cannot drift from the types,
what the writer writes fits it, schema-1 records still load, and a record that does not fit
is DEPLOY_RECORD_INVALID naming the file, the rule and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from common.digests import sha256_digest
from common.errors import StageError
from common.settings import PROJECT_ROOT
from deploy.config import DeployConfig
from deploy.controller import RolloutReport
from deploy.decision_record import write_record
from deploy.decision_record_schema import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    Parity,
    StableBefore,
    Verification,
    json_schema,
    list_records,
    load_record,
)
from tests.deploy.records import finished_record

pytestmark = pytest.mark.unit

REGENERATE = f"python -m deploy.decision_record_schema --schema > {SCHEMA_PATH}"


def _committed_schema() -> dict[str, Any]:
    return dict(json.loads((PROJECT_ROOT / SCHEMA_PATH).read_text()))


def test_the_committed_schema_is_the_one_the_types_generate() -> None:
    committed = (PROJECT_ROOT / SCHEMA_PATH).read_text()
    assert json_schema() == committed, (
        f"{SCHEMA_PATH} is stale: the decision record's types changed. Regenerate it with "
        f"`{REGENERATE}` (and raise SCHEMA_VERSION with an upgrade step if a field was "
        "renamed, removed or retyped: docs/stages/deploy_canary.md, 'Decision record').")


def _written_record(tmp_path: Path) -> Path:
    """A record filled in by every writer step a canary deploy takes, written to disk."""
    record = finished_record("models:/demo-model/2", "rolled_back", "FAIL",
                             config=DeployConfig(steps=[10, 100]))
    record.verification = Verification("models:/demo-model/2", passed=True,
                                       model_digest="ab" * 32)
    record.engine, record.backend = "local", "local"
    record.stable_before = StableBefore("models:/demo-model/1")
    record.parity = Parity("1", "0" * 64, max_tokens=8, tolerance=0.1,
                           max_logprob_diff_allowed=0.5)
    record.parity.record_check("stable", {"skipped": "deploy.parity_check is false"})
    record.add_rollout(RolloutReport("FAIL", timeline=[
        {"t_seconds": 1.5, "canary_percent": 10, "stable": {"errors": 0}},
        {"load": {"sent": 10, "ok": 9}}]))
    record.note("fault injected on the canary")
    return write_record(tmp_path, record)


def test_a_written_record_fits_the_schema_and_loads_back_as_written(tmp_path: Path) -> None:
    path = _written_record(tmp_path)
    data = json.loads(path.read_text())
    jsonschema.validate(data, _committed_schema())
    assert data["schema_version"] == SCHEMA_VERSION == 2
    loaded = load_record(path)
    assert loaded.to_dict() == data
    assert loaded.load == {"sent": 10, "ok": 9} and loaded.rollout_outcome == "FAIL"
    assert loaded.parity is not None and loaded.parity.stable == {
        "skipped": "deploy.parity_check is false"}
    assert (tmp_path / "records" / "latest.json").read_text() == path.read_text()


def _schema_1(**changes: Any) -> dict[str, Any]:
    # keys and values as the previous release's writer left them
    record = {
        "schema_version": 1, "deployment": "demo", "model_uri": "models:/demo-model/3",
        "model_digest": "cd" * 32, "started_at": "2026-11-01T10:00:00+00:00",
        "config": {"steps": [10, 50, 100]},
        "thresholds": {"min_requests": 50, "max_ttft_p95_seconds": 1.0,
                       "max_itl_p95_seconds": 0.2, "max_error_rate": 0.01,
                       "max_latency_ratio": 1.5, "latency_slack_seconds": 0.05,
                       "mann_whitney_alpha": 0.05},
        "stable_before": {"model_uri": "models:/demo-model/2"}, "steps": [], "timeline": [],
        "notes": ["a note"], "champion": {"before": "2", "after": "3", "moved": True,
                                          "moved_at": "2026-11-01T10:05:00+00:00"},
        "verification": {"model_uri": "models:/demo-model/3", "passed": True,
                         "model_digest": "cd" * 32},
        "engine": "local", "backend": "local", "load": None, "rollout_outcome": "PASS",
        "outcome": "PASS", "action": "promoted", "endpoint": "http://127.0.0.1:8000",
        "servers": {}, "finished_at": "2026-11-01T10:06:00+00:00"}
    record.update(changes)
    return record


def test_a_schema_1_record_is_upgraded_on_load(tmp_path: Path) -> None:
    path = tmp_path / "20261101T100000-v3.json"
    path.write_text(json.dumps(_schema_1()))
    loaded = load_record(path)
    assert loaded.schema_version == 2
    assert loaded.champion is not None and loaded.champion.before == "2" and loaded.champion.moved
    assert loaded.stable_before == StableBefore("models:/demo-model/2")
    jsonschema.validate(loaded.to_dict(), _committed_schema())
    # thresholds a schema-1 record did not carry read as "not recorded", not as today's defaults
    assert loaded.thresholds.p99_min_requests is None


def test_the_record_carries_every_threshold_the_analysis_decides_with() -> None:
    import dataclasses

    from deploy import analysis
    from deploy.decision_record import start_record
    from deploy.decision_record_schema import Thresholds
    from deploy.model_ref import ModelToDeploy

    names = [f.name for f in dataclasses.fields(Thresholds)]
    assert names == [f.name for f in dataclasses.fields(analysis.Thresholds)]
    config = DeployConfig(p99_min_requests=300, max_tail_share_increase=0.05)
    record = start_record("d", ModelToDeploy("m", "1", sha256_digest("ab" * 32)), config)
    assert dataclasses.asdict(record.thresholds) == dataclasses.asdict(
        analysis.Thresholds.from_config(config))


@pytest.mark.parametrize(("content", "rule"), [
    (json.dumps(_schema_1(schema_version=3)), "schema_version 3 is not one this release reads"),
    (json.dumps(_schema_1(schema_version=True)), "schema_version is True, not an integer"),
    (json.dumps({k: v for k, v in _schema_1().items() if k != "schema_version"}),
     "schema_version is None"),
    (json.dumps({k: v for k, v in _schema_1().items() if k != "model_uri"}), "model_uri"),
    (json.dumps(_schema_1(champion={"before": "2", "after": "3", "moved": "yes"})),
     "champion.moved"),
    (json.dumps(_schema_1(action="deleted")), "action"),
    (json.dumps(_schema_1(notes="one note")), "notes"),
    ('{"schema_version": 2, "deploym', "it is not JSON"),
    ("[1, 2]", "it holds a JSON list, not an object"),
])
def test_a_record_that_does_not_fit_is_refused_naming_file_rule_and_fix(
        tmp_path: Path, content: str, rule: str) -> None:
    path = tmp_path / "20261101T100000-v3.json"
    path.write_text(content)
    with pytest.raises(StageError) as failure:
        load_record(path)
    assert failure.value.code == "DEPLOY_RECORD_INVALID"
    message = failure.value.message
    assert str(path) in message and rule in message, message
    assert "restore this one from its MLflow copy" in message


def test_a_listing_keeps_the_records_that_load_and_reports_each_that_does_not(
        tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    (records / "20261101T100000-v3.json").write_text(json.dumps(_schema_1()))
    (records / "20261102T100000-v4.json").write_text(json.dumps(_schema_1(schema_version=9)))
    (records / "latest.json").write_text("{}")  # a copy of the newest, not an entry
    written = _written_record(tmp_path)
    listing = list_records(tmp_path)
    assert [f.path.name for f in listing.records] == ["20261101T100000-v3.json", written.name]
    assert [e.details["path"] for e in listing.invalid] == [
        str(records / "20261102T100000-v4.json")]
    assert list_records(tmp_path / "nothing").records == []
