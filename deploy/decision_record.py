"""The JSON decision record of a deploy: what was asked, what was measured, what was decided.

Written next to the deployment state (`<SHIPYARD_HOME>/deployments/<name>/records/`) and
logged to MLflow as a run in the registered model's experiment (artifact
`deploy/decision_record.json` plus the HTML report), so a promotion or rollback can be
audited from the registry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from common.fs import atomic_write_text, private_dir
from common.redact import redact
from deploy.config import DeployConfig
from deploy.decision_record_schema import (
    SCHEMA_VERSION,
    DecisionRecord,
    Thresholds,
    load_record,
)
from deploy.model_ref import ModelToDeploy
from deploy.report import report_page

logger = logging.getLogger(__name__)

# The record's types, reader and schema live in deploy/decision_record_schema.py (no MLflow).
__all__ = ["SCHEMA_VERSION", "DecisionRecord", "load_record", "log_to_mlflow", "start_record",
           "write_record"]


def start_record(name: str, model: ModelToDeploy, config: DeployConfig) -> DecisionRecord:
    """What was asked: the record a deploy, `serve` or `undo` fills in as it goes."""
    return DecisionRecord(
        deployment=name, model_uri=model.model_uri, model_digest=model.model_digest,
        started_at=datetime.now(UTC).isoformat(), config=dataclasses.asdict(config),
        thresholds=Thresholds(**{f.name: getattr(config, f.name)
                                 for f in dataclasses.fields(Thresholds)}))


def write_record(work_dir: Path, record: DecisionRecord) -> Path:
    """Write the record (redacted: no credential from a URI in the config or the notes)."""
    data = redact(record.to_dict())
    records = private_dir(work_dir / "records")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    version = record.model_uri.rsplit("/", 1)[-1]
    path = records / f"{stamp}-v{version}.json"
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write_text(path, text)  # 0600, fsynced: the history entry names its sha256
    atomic_write_text(records / "latest.json", text)
    return path


def log_to_mlflow(client: Any, model: ModelToDeploy, record: DecisionRecord) -> str | None:
    """A run in the registration run's experiment; returns runs:/ID/deploy/... or None."""
    data = redact(record.to_dict())
    try:
        if model.mlflow_run_id:
            experiment_id = client.get_run(model.mlflow_run_id).info.experiment_id
        else:
            experiment = client.get_experiment_by_name("shipyard")
            experiment_id = experiment.experiment_id if experiment else \
                client.create_experiment("shipyard")
        run = client.create_run(
            experiment_id, run_name=f"deploy-{record.deployment}-v{model.version}",
            tags={"shipyard.stage": "deploy", "shipyard.deploy.outcome": str(record.outcome),
                  "shipyard.deploy.action": str(record.action),
                  "model_uri": model.model_uri, "model_digest": model.model_digest})
        # (tags: a deployment name, outcomes, models:/ URI and digest; no URI with credentials)
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory(prefix="shipyard-deploy-") as tmp:
            folder = Path(tmp) / "deploy"
            folder.mkdir()
            (folder / "decision_record.json").write_text(
                json.dumps(data, indent=2, default=str))
            (folder / "report.html").write_text(report_page(record))
            client.log_artifacts(run_id, str(folder), "deploy")
        for step in record.steps:
            canary = step.get("canary") or {}
            for key in ("ttft_p95_seconds", "itl_p95_seconds", "error_rate"):
                if canary.get(key) is not None:
                    client.log_metric(run_id, f"canary_{key}", float(canary[key]),
                                      step=int(step["canary_percent"]))
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return f"runs:/{run_id}/deploy/decision_record.json"
    except (MlflowException, OSError) as exc:
        # The decision already happened and is on disk; a tracking outage must not undo it.
        logger.error("could not log the decision record to MLflow: %s", exc)
        return None
