"""Flyte task `evaluate`: TrainedModel + ValidatedDataset + EvalConfig -> EvalReport (a thin
shell over `eval.run.evaluate_model`; README: "Stage: evaluate")."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from flytekit import Resources, task
from flytekit.types.file import FlyteFile

from common.cost import stage_cost
from common.errors import StageError
from common.settings import load_settings
from eval.config import EvalConfig
from eval.errors import EvalError
from eval.report import overview_facts
from eval.run import evaluate_model
from eval.summary import EvalSummary
from tasks import timeouts
from tasks.contracts import EvalReport, TrainedModel, ValidatedDataset
from tasks.flyte_adapter import error_html, publish_report, quiet_console, run_reports_dir

_STAGE = "evaluate"


@task(
    timeout=timeouts.EVALUATE,
    # Not cached by Flyte: the champion alias can move between two runs with equal inputs.
    # Re-runs are cheap anyway: lm-eval responses and judge calls are cached per model digest.
    cache=False,
    retries=1,
    requests=Resources(cpu="2", mem="8Gi"),
    enable_deck=True,
)
def evaluate(model: TrainedModel, dataset: ValidatedDataset, config: EvalConfig) -> EvalReport:
    with stage_cost(_STAGE, run_reports_dir()) as cost:
        started = time.time()
        quiet_console()
        try:
            summary = evaluate_model(
                model_dir=Path(model.model_dir.download()), model_digest=model.model_digest,
                training_run_id=model.mlflow_run_id,
                eval_split=Path(dataset.files.download()) / "eval.jsonl",
                eval_split_digest=dataset.split_digests.get("eval"), config=config,
                settings=load_settings(), work_dir=Path(tempfile.mkdtemp(prefix="shipyard-eval-")),
                # A Flyte secret is mounted as this environment variable; read here, at the edge.
                judge_api_key=os.environ.get(config.judge_api_key_env) or None)
        except EvalError as exc:
            publish_report(_STAGE, "Evaluation: error", error_html(exc), started=started, error=exc)
            raise StageError(exc.code, exc.message, details=exc.details) from exc
        report = json.loads(summary.report_path.read_text())
        judge_usage = (report.get("judge") or {}).get("usage") or {}
        cost.extra_usd = float(judge_usage.get("cost") or 0.0)
        cost.extra_usd_basis = "judge tokens at eval.judge_price_per_1k_*_tokens"
        cost.mlflow_run_id = summary.mlflow_run_id or None
        cost.mlflow_tracking_uri = load_settings().mlflow_tracking_uri
        publish_report(_STAGE, f"Evaluation: {summary.outcome}", summary.report_html,
                       json_path=summary.report_path, started=started,
                       status="succeeded" if summary.outcome == "PASS" else "failed",
                       facts=overview_facts(report))
        try:
            summary.require_pass()
        except EvalError as exc:
            raise StageError(exc.code, exc.message, details=exc.details) from exc
        return to_eval_report(summary)


def to_eval_report(summary: EvalSummary) -> EvalReport:
    return EvalReport(
        gate_outcome=summary.outcome,
        gate_reasons=list(summary.reasons),
        gate_mode=summary.mode,
        model_digest=summary.model_digest,
        model_path=summary.model_path,
        metrics=summary.metrics,
        comparisons=summary.comparisons,
        judge=summary.judge,
        judge_gating=summary.judge_gating,
        judge_non_gating_reasons=list(summary.judge_non_gating_reasons),
        calibration=summary.calibration,
        task_versions=summary.task_versions,
        task_data_digests=summary.task_data_digests,
        report_json=FlyteFile(str(summary.report_path)),
        report_digest=summary.report_digest,
        mlflow_run_id=summary.mlflow_run_id,
        champion_version=summary.champion_version,
        champion_digest=summary.champion_digest,
    )
