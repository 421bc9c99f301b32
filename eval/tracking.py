"""Eval metrics and the report in MLflow, next to the training run of the same model."""

from __future__ import annotations

import time

from common.redact import redact_text
from eval.report import mlflow_metrics
from eval.stage import EvalOutcome

EXPERIMENT_NAME = "shipyard"


def log_to_mlflow(outcome: EvalOutcome, tracking_uri: str, training_run_id: str) -> str:
    """Eval metrics and the report go to the training run (one run per model), or to a new
    run in the `shipyard` experiment when that run is not in this store. Returns the run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    run_id = training_run_id
    try:
        client.get_run(run_id)
    except MlflowException:
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        experiment_id = (experiment.experiment_id if experiment
                         else client.create_experiment(EXPERIMENT_NAME))
        run_id = client.create_run(experiment_id, run_name="evaluate").info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in
               mlflow_metrics(outcome.report).items()]
    client.log_batch(run_id, metrics=metrics, tags=[
        RunTag("eval_gate", outcome.decision.outcome),
        RunTag("eval_report_sha256", outcome.report_sha256)])
    html_path = outcome.report_path.with_suffix(".html")
    # The JSON report is redacted where it is built (eval.report.build_report).
    html_path.write_text(redact_text(outcome.html), encoding="utf-8")
    client.log_artifact(run_id, str(outcome.report_path), "eval")
    client.log_artifact(run_id, str(html_path), "eval")
    return str(run_id)
