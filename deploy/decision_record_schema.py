"""The decision record's types, its one reader (`load_record`) and its JSON Schema.

Versioning: an additive change (a new field with a default) keeps `SCHEMA_VERSION`; a renamed,
removed or retyped field raises it by one and adds an upgrade step to `_UPGRADES`, so records
written by an earlier release (still in users' `records/` folders) keep loading. A record with
a newer or unknown version, or one that does not fit the types, is DEPLOY_RECORD_INVALID.
The committed schema (docs/reference/decision-record.schema.json) is generated from these
types (`python -m deploy.decision_record_schema --schema > <that file>`; a test compares them).

No MLflow here (the writer, deploy/decision_record.py, logs to it): `shipyard status` and
`history` read records with this module alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from common.errors import StageError
from deploy.outcomes import Outcome, RecordAction

if TYPE_CHECKING:
    from deploy.controller import RolloutReport

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SCHEMA_PATH = "docs/reference/decision-record.schema.json"
# pydantic reads this from each dataclass: the schema describes what `to_dict` writes, where
# every field is present (a default is a value, not an absent key).
_PYDANTIC = {"json_schema_serialization_defaults_required": True}


@dataclass
class Thresholds:
    __pydantic_config__ = _PYDANTIC
    # the canary analysis thresholds (deploy/analysis.py Thresholds: the same names, a test
    # keeps them equal), copied from the config for auditors
    min_requests: int
    max_ttft_p95_seconds: float
    max_itl_p95_seconds: float
    max_error_rate: float
    max_latency_ratio: float
    latency_slack_seconds: float
    mann_whitney_alpha: float
    # the tail and stable-health thresholds; None: a record written before they were recorded
    p99_min_requests: int | None = None
    max_tail_share_increase: float | None = None
    max_stable_error_rate: float | None = None


@dataclass
class StableBefore:
    __pydantic_config__ = _PYDANTIC
    # what served users before the canary (or the manual serve) took over
    model_uri: str


@dataclass
class ChampionMove:
    __pydantic_config__ = _PYDANTIC
    # the champion alias's version when the deploy started and when it ended (None: none)
    before: str | None
    after: str | None
    moved: bool
    moved_at: str | None = None  # ISO 8601, UTC; set when `moved`


@dataclass
class Verification:
    __pydantic_config__ = _PYDANTIC
    # registry.verify_model of the model deployed (a failure writes no record: nothing served)
    model_uri: str
    passed: bool
    model_digest: str


@dataclass
class Parity:
    __pydantic_config__ = _PYDANTIC
    # served = evaluated (deploy/parity.py). `stable` / `canary`: that track's check, shaped
    # by deploy/parity.py's ParityResult.to_dict (or {"skipped": why}): owned there, not here.
    prompts_version: str
    prompts_sha256: str
    max_tokens: int
    tolerance: float
    max_logprob_diff_allowed: float
    stable: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None

    def record_check(self, role: str, check: dict[str, Any]) -> None:
        if role not in ("stable", "canary"):
            raise ValueError(f"parity is checked per track (stable, canary), not {role!r}")
        setattr(self, role, check)


@dataclass
class DecisionRecord:
    __pydantic_config__ = _PYDANTIC
    deployment: str
    model_uri: str
    model_digest: str
    started_at: str  # ISO 8601, UTC
    # dataclasses.asdict(DeployConfig): its shape is the config's (deploy/config.py)
    config: dict[str, Any]
    thresholds: Thresholds
    schema_version: Literal[2] = 2  # SCHEMA_VERSION
    stable_before: StableBefore | None = None
    champion: ChampionMove | None = None
    verification: Verification | None = None
    engine: str | None = None  # "vllm" or "local" (the engine serving the tracks)
    backend: str | None = None  # "local" or "kubernetes"
    parity: Parity | None = None
    # StepResult.to_dict() per canary step, and the controller's timeline points: their
    # shape is the controller's (deploy/controller.py), so they stay plain JSON objects here.
    steps: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    load: dict[str, Any] | None = None  # deploy/loadgen.py LoadResult.to_dict()
    rollout_outcome: Outcome | None = None
    outcome: Outcome | None = None
    action: RecordAction | None = None
    endpoint: str | None = None
    servers: dict[str, Any] | None = None  # Backend.describe()
    finished_at: str | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add_rollout(self, report: RolloutReport) -> None:
        self.steps = [step.to_dict() for step in report.steps]
        self.timeline = [p for p in report.timeline if "t_seconds" in p]
        loads = [p["load"] for p in report.timeline if "load" in p]
        self.load = loads[-1] if loads else None
        self.rollout_outcome = report.outcome

    def finish(self, outcome: Outcome, action: RecordAction, endpoint: str,
               servers: dict[str, Any]) -> None:
        self.outcome, self.action, self.endpoint, self.servers = outcome, action, endpoint, servers
        self.finished_at = datetime.now(UTC).isoformat()

    def to_dict(self) -> dict[str, Any]:
        """The JSON written to disk and to MLflow (the key names readers have always used)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> DecisionRecord:
        """Validate `data` (any supported schema version, upgraded first) into a record;
        DEPLOY_RECORD_INVALID names `source` and the rule broken."""
        import pydantic  # here: `shipyard --help` must stay cheap (tests/cli/test_import_cost.py)

        upgraded = _upgrade(data, source)
        try:
            # strict on JSON: no "3" for an int, no "true" for a bool
            return _adapter().validate_json(json.dumps(upgraded), strict=True)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise invalid(source, f"it does not fit schema {SCHEMA_VERSION} ({problems})"
                          ) from exc


def load_record(path: Path) -> DecisionRecord:
    """The one reader of decision record files (schema 1 and 2)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise invalid(str(path), f"it cannot be read ({exc})") from exc
    except ValueError as exc:
        raise invalid(str(path), f"it is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise invalid(str(path), f"it holds a JSON {type(data).__name__}, not an object")
    return DecisionRecord.from_dict(data, str(path))


@dataclass(frozen=True)
class RecordFile:
    path: Path
    record: DecisionRecord


@dataclass(frozen=True)
class RecordListing:
    # the records that load, oldest first (file names start with their UTC time stamp)
    records: list[RecordFile]
    # one DEPLOY_RECORD_INVALID per file that does not: a listing shows them, never drops them
    invalid: list[StageError]

    def invalid_rows(self) -> list[dict[str, Any]]:
        """The records that do not load, as `--json` output shows them."""
        return [{"code": e.code, "record_path": e.details.get("path"), "message": e.message}
                for e in self.invalid]


def list_records(work_dir: Path) -> RecordListing:
    """Every decision record of a deployment (`latest.json` is a copy of the newest)."""
    records, invalid_ones = [], []
    folder = work_dir / "records"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name == "latest.json":
            continue
        try:
            records.append(RecordFile(path, load_record(path)))
        except StageError as exc:  # the caller reports it (each reader its own way)
            invalid_ones.append(exc)
    return RecordListing(records, invalid_ones)


def invalid(source: str, rule: str) -> StageError:
    return StageError(
        "DEPLOY_RECORD_INVALID",
        f"decision record {source}: {rule}. Records are written by the deploy and never "
        "edited: restore this one from its MLflow copy (artifact deploy/decision_record.json "
        "of the deploy's run) or a backup, or move it out of records/ into an archive folder; "
        f"a schema_version above {SCHEMA_VERSION} needs the Shipyard release that wrote it.",
        details={"path": source, "rule": rule})


def _from_v1(data: dict[str, Any]) -> dict[str, Any]:
    # Schema 1 (the release before typed records) had the same keys, untyped, and left out
    # the keys a deploy never set; the types check the rest. Nothing is renamed.
    return {**data, "schema_version": 2}


# version -> the step that lifts a record of that version by one
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_v1}


def _upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    version = data.get("schema_version")
    if type(version) is not int:  # a bool is no version
        raise invalid(source, f"schema_version is {version!r}, not an integer")
    if version > SCHEMA_VERSION or (version < SCHEMA_VERSION and version not in _UPGRADES):
        raise invalid(source, f"schema_version {version} is not one this release reads "
                              f"(1 to {SCHEMA_VERSION})")
    while data["schema_version"] < SCHEMA_VERSION:
        data = _UPGRADES[data["schema_version"]](data)
    return data


def _adapter() -> Any:
    import pydantic

    return pydantic.TypeAdapter(DecisionRecord)


def json_schema() -> str:
    """The record's JSON Schema (the committed docs/reference/decision-record.schema.json)."""
    schema = _adapter().json_schema(mode="serialization")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": "https://shipyard.invalid/decision-record.schema.json",
              "title": f"Shipyard deploy decision record (schema_version {SCHEMA_VERSION})",
              **{k: v for k, v in schema.items() if k != "title"}}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m deploy.decision_record_schema --schema")
    sys.stdout.write(json_schema())
