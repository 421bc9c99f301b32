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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from common.fs import atomic_write_text, private_dir
from common.redact import redact
from deploy.config import DeployConfig
from deploy.controller import RolloutReport
from deploy.model_ref import ModelToDeploy
from deploy.report import report_page

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class DecisionRecord:
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, name: str, model: ModelToDeploy, config: DeployConfig) -> DecisionRecord:
        return cls({
            "schema_version": SCHEMA_VERSION,
            "deployment": name,
            "model_uri": model.model_uri,
            "model_digest": model.model_digest,
            "started_at": datetime.now(UTC).isoformat(),
            "config": dataclasses.asdict(config),
            "thresholds": {
                "min_requests": config.min_requests,
                "max_ttft_p95_seconds": config.max_ttft_p95_seconds,
                "max_itl_p95_seconds": config.max_itl_p95_seconds,
                "max_error_rate": config.max_error_rate,
                "max_latency_ratio": config.max_latency_ratio,
                "latency_slack_seconds": config.latency_slack_seconds,
                "mann_whitney_alpha": config.mann_whitney_alpha,
            },
            "stable_before": None,
            "steps": [],
            "timeline": [],
            "notes": [],
        })

    def note(self, text: str) -> None:
        self.data["notes"].append(text)

    def add_rollout(self, report: RolloutReport) -> None:
        self.data["steps"] = [step.to_dict() for step in report.steps]
        self.data["timeline"] = [p for p in report.timeline if "t_seconds" in p]
        loads = [p["load"] for p in report.timeline if "load" in p]
        self.data["load"] = loads[-1] if loads else None
        self.data["rollout_outcome"] = report.outcome

    def finish(self, outcome: str, action: str, endpoint: str, servers: dict[str, Any]) -> None:
        self.data.update({"outcome": outcome, "action": action, "endpoint": endpoint,
                          "servers": servers, "finished_at": datetime.now(UTC).isoformat()})


def write_record(work_dir: Path, data: dict[str, Any]) -> Path:
    """Write the record (redacted: no credential from a URI in the config or the notes)."""
    data = redact(data)
    records = private_dir(work_dir / "records")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    version = str(data["model_uri"]).rsplit("/", 1)[-1]
    path = records / f"{stamp}-v{version}.json"
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write_text(path, text)  # 0600, fsynced: the history entry names its sha256
    atomic_write_text(records / "latest.json", text)
    return path


def log_to_mlflow(client: Any, model: ModelToDeploy, data: dict[str, Any]) -> str | None:
    """A run in the registration run's experiment; returns runs:/ID/deploy/... or None."""
    data = redact(data)
    try:
        if model.mlflow_run_id:
            experiment_id = client.get_run(model.mlflow_run_id).info.experiment_id
        else:
            experiment = client.get_experiment_by_name("shipyard")
            experiment_id = experiment.experiment_id if experiment else \
                client.create_experiment("shipyard")
        run = client.create_run(
            experiment_id, run_name=f"deploy-{data['deployment']}-v{model.version}",
            tags={"shipyard.stage": "deploy", "shipyard.deploy.outcome": str(data["outcome"]),
                  "shipyard.deploy.action": str(data["action"]),
                  "model_uri": model.model_uri, "model_digest": model.model_digest})
        # (tags: a deployment name, outcomes, models:/ URI and digest; no URI with credentials)
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory(prefix="shipyard-deploy-") as tmp:
            folder = Path(tmp) / "deploy"
            folder.mkdir()
            (folder / "decision_record.json").write_text(
                json.dumps(data, indent=2, default=str))
            (folder / "report.html").write_text(report_page(data))
            client.log_artifacts(run_id, str(folder), "deploy")
        for step in data.get("steps", []):
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
