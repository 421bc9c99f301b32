"""`evaluate` stage: lm-eval suite, LLM judge and promotion gate (README: "Stage: evaluate").

The @task converts Flyte types; `evaluate_model` does the stage's own plumbing around
`eval.stage.run_eval`: find the MLflow champion (and verify its files against its digest),
start serving engines where the config asks for an endpoint nobody gave, log metrics and
the report to MLflow, publish the HTML deck, and turn a gate FAIL into EVAL_GATE_FAILED.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from flytekit import Resources, task
from flytekit.types.file import FlyteFile

from common.digests import sha256_file
from common.errors import StageError
from common.settings import Settings, load_settings
from eval.config import EvalConfig
from eval.errors import EvalError
from eval.harness import ModelSource
from eval.judge.client import JudgeEndpoint, first_served_model
from eval.report import mlflow_metrics
from eval.stage import EvalOutcome, run_eval
from tasks.contracts import EvalReport, TrainedModel, ValidatedDataset
from tasks.flyte_adapter import publish_report

CANDIDATE_NAME, CHAMPION_NAME, JUDGE_NAME = "candidate", "champion", "judge"


@dataclass(frozen=True)
class Champion:
    version: str
    digest: str
    model_dir: Path


def find_champion(config: EvalConfig, tracking_uri: str, download_dir: Path) -> Champion | None:
    """The `champion_alias` version of `registered_model_name`, downloaded and verified;
    None when the model or the alias does not exist yet (first registration)."""
    if config.registered_model_name is None:
        return None
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from common.digests import model_root_digest

    client = MlflowClient(tracking_uri)
    try:
        # Aliases are read from the registered model (search results do not carry them);
        # a model without the alias, or no model at all, means there is no champion yet.
        aliases = client.get_registered_model(config.registered_model_name).aliases
        if config.champion_alias not in aliases:
            return None
        version = client.get_model_version(config.registered_model_name,
                                           str(aliases[config.champion_alias]))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise StageError("EVAL_CHAMPION_LOOKUP_FAILED",
                         f"MLflow {tracking_uri}: cannot read alias {config.champion_alias!r} of "
                         f"{config.registered_model_name!r}: {exc.message}") from exc
    expected = version.tags.get("model_digest", "")
    local = Path(download_artifacts(artifact_uri=version.source, dst_path=str(download_dir),
                                    tracking_uri=tracking_uri))
    found = model_root_digest(local)
    if found != expected:
        # Fail closed: a champion whose files are not the ones registered is no baseline.
        raise StageError("EVAL_CHAMPION_DIGEST_MISMATCH",
                         f"champion {config.registered_model_name} v{version.version} "
                         f"({version.source}): files digest {found} != registered "
                         f"model_digest {expected or '(missing tag)'}. Re-register the champion.")
    return Champion(str(version.version), found, local)


def evaluate_model(model_dir: Path, model_digest: str, training_run_id: str, eval_split: Path,
                   config: EvalConfig, settings: Settings, work_dir: Path
                   ) -> tuple[EvalOutcome, Champion | None, str]:
    """Run the stage; returns the outcome, the champion and the MLflow run logged to."""
    cache_dir = Path(config.cache_dir) if config.cache_dir else settings.home / "eval-cache"
    with ExitStack() as engines:
        # The champion's files are only needed while it is evaluated (they can be large).
        champion_dir = Path(engines.enter_context(
            tempfile.TemporaryDirectory(prefix="shipyard-champion-")))
        champion = find_champion(config, settings.mlflow_tracking_uri, champion_dir)
        candidate = _source(config, model_dir, model_digest, CANDIDATE_NAME, engines,
                            config.completions_base_url)
        champion_source = None
        if champion is not None:
            # completions_base_url serves the candidate; the champion gets its own engine.
            champion_source = _source(config, champion.model_dir, champion.digest,
                                      CHAMPION_NAME, engines, None)
        outcome = run_eval(config, candidate, work_dir=work_dir, champion=champion_source,
                           judge_endpoint=_judge_endpoint(config, engines),
                           eval_split=eval_split, cache_dir=cache_dir)
    run_id = log_to_mlflow(outcome, settings.mlflow_tracking_uri, training_run_id)
    return outcome, champion, run_id


def _source(config: EvalConfig, model_dir: Path, digest: str, name: str, engines: ExitStack,
            base_url: str | None) -> ModelSource:
    if config.model_path == "local-completions" and base_url is None:
        base_url = _start_engine(config, model_dir, name, engines)
    return ModelSource(model_dir, digest, config.model_path, base_url=base_url,
                       served_model_name=name if base_url else None)


def _judge_endpoint(config: EvalConfig, engines: ExitStack) -> JudgeEndpoint | None:
    # Read at the stage's edge: a Flyte secret is mounted as this environment variable.
    api_key = os.environ.get(config.judge_api_key_env) or None
    if config.judge_base_url is not None:
        model = config.judge_model or first_served_model(config.judge_base_url, api_key)
        return JudgeEndpoint(config.judge_base_url, model, api_key)
    if config.judge_model_dir is not None:
        base_url = _start_engine(config, Path(config.judge_model_dir), JUDGE_NAME, engines)
        return JudgeEndpoint(base_url, config.judge_model or JUDGE_NAME, None)
    return None


def _start_engine(config: EvalConfig, model_dir: Path, name: str, engines: ExitStack) -> str:
    from serving.engine import start_engine

    engine = engines.enter_context(start_engine(
        config.serving_engine, model_dir, name,
        ready_timeout_seconds=config.engine_ready_timeout_seconds))
    return engine.base_url


def log_to_mlflow(outcome: EvalOutcome, tracking_uri: str, training_run_id: str) -> str:
    """Eval metrics and the report go to the training run (one run per model), or to a new
    run in the `shipyard` experiment when that run is not in this store."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    run_id = training_run_id
    try:
        client.get_run(run_id)
    except MlflowException:
        experiment = client.get_experiment_by_name("shipyard")
        experiment_id = (experiment.experiment_id if experiment
                         else client.create_experiment("shipyard"))
        run_id = client.create_run(experiment_id, run_name="evaluate").info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in
               mlflow_metrics(outcome.report).items()]
    client.log_batch(run_id, metrics=metrics, tags=[
        RunTag("eval_gate", outcome.decision.outcome),
        RunTag("eval_report_sha256", outcome.report_sha256)])
    html_path = outcome.report_path.with_suffix(".html")
    html_path.write_text(outcome.html, encoding="utf-8")
    client.log_artifact(run_id, str(outcome.report_path), "eval")
    client.log_artifact(run_id, str(html_path), "eval")
    return run_id


def to_eval_report(outcome: EvalOutcome, champion: Champion | None, run_id: str) -> EvalReport:
    report = outcome.report
    judge = report["judge"]
    return EvalReport(
        gate_outcome=outcome.decision.outcome,
        gate_reasons=list(outcome.decision.reasons),
        gate_mode=outcome.decision.mode,
        model_digest=outcome.candidate.model_digest,
        champion_version=champion.version if champion else "",
        champion_digest=champion.digest if champion else "",
        model_path=outcome.candidate.model_path,
        metrics={t: _finite(m) for t, m in outcome.candidate.metrics.items()},
        comparisons={c["task"]: _finite({**c, "margin": report["config"][
            "non_inferiority_margins"].get(c["task"])}) for c in report["gate"]["comparisons"]},
        judge=_finite({**(judge.get("pairwise") or {}),
                       "rubric_candidate_mean_score":
                           (judge.get("rubric_candidate") or {}).get("mean_score"),
                       **{f"usage_{k}": v for k, v in (judge.get("usage") or {}).items()}}),
        judge_gating=bool(judge.get("gating")),
        judge_non_gating_reasons=list(judge.get("non_gating_reasons") or []),
        calibration=_finite(judge.get("calibration") or {}),
        task_versions=dict(report["suite"]["versions"]),
        task_data_digests=dict(report["suite"]["data_sha256"]),
        report_json=FlyteFile(str(outcome.report_path)),
        report_digest=outcome.report_sha256,
        mlflow_run_id=run_id,
    )


def _finite(values: dict) -> dict[str, float]:
    """Numeric, finite entries only (Flyte's float map; NaN/None/text stay in the JSON)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")}


@task(
    # Not cached by Flyte: the champion alias can move between two runs with equal inputs.
    # Re-runs are cheap anyway: lm-eval responses and judge calls are cached per model digest.
    cache=False,
    retries=1,
    requests=Resources(cpu="2", mem="8Gi"),
    enable_deck=True,
)
def evaluate(model: TrainedModel, dataset: ValidatedDataset, config: EvalConfig) -> EvalReport:
    model_dir = Path(model.model_dir.download())
    eval_split = Path(dataset.files.download()) / "eval.jsonl"
    if sha256_file(eval_split) != dataset.split_digests.get("eval"):
        raise StageError("EVAL_DATASET_DIGEST_MISMATCH",
                         f"{eval_split}: sha256 differs from the digest validate_data recorded. "
                         "Re-run validate_data; do not edit its outputs.")
    work_dir = Path(tempfile.mkdtemp(prefix="shipyard-eval-"))
    try:
        outcome, champion, run_id = evaluate_model(
            model_dir, model.model_digest, model.mlflow_run_id, eval_split, config,
            load_settings(), work_dir)
    except EvalError as exc:
        raise StageError(exc.code, exc.message, details=exc.details) from exc
    publish_report("evaluate", f"Evaluation: {outcome.decision.outcome}", outcome.html,
                   json_path=outcome.report_path)
    if outcome.decision.outcome != "PASS":
        raise StageError("EVAL_GATE_FAILED",
                         "the candidate did not pass the promotion gate: "
                         + "; ".join(outcome.decision.reasons)
                         + f". Report: {outcome.report_path} (MLflow run {run_id}, eval/).",
                         details={"report_path": str(outcome.report_path)})
    return to_eval_report(outcome, champion, run_id)
