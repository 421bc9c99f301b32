"""Flyte tasks `champion_reference` (EvalConfig -> which champion to compare against) and
`evaluate`: TrainedModel + ValidatedDataset + EvalConfig + that reference -> EvalReport (a thin
shell over `eval.run.evaluate_model`; docs/stages/evaluate.md).

The evaluation stack (lm-eval, torch, transformers, model-signing) is imported inside the task
bodies: a re-run whose evaluate is a cache hit does not pay for importing it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from flytekit import Cache, Resources, task
from flytekit.types.file import FlyteFile

from common.cost import CostConfig
from common.settings import load_settings
from eval.config import EvalConfig
from registry.model_uri import ChampionReference
from tasks import timeouts
from tasks.caching import COMMON, code_version
from tasks.contracts import EvalReport, TrainedModel, ValidatedDataset, from_result
from tasks.flyte_adapter import JUDGE_SECRETS, MLFLOW_SECRETS, STAGE_DECK_FIELDS, quiet_console
from tasks.shell import stage_shell

if TYPE_CHECKING:
    from eval.summary import EvalSummary

_STAGE = "evaluate"


# Never cached: it reads the live champion alias. Run just before evaluate (after train), so
# the alias has the least time to move before evaluate compares against it.
@task(cache=False, retries=2, timeout=timeouts.RESOLVE, secret_requests=MLFLOW_SECRETS)
def champion_reference(config: EvalConfig) -> ChampionReference:
    """The champion's version pinned to its digest, or no champion
    (`eval.champion.champion_reference`)."""
    from eval.champion import champion_reference as read_reference

    quiet_console()
    return read_reference(config, load_settings().mlflow_tracking_uri)


@task(
    timeout=timeouts.EVALUATE,
    # Cached: the key is (candidate, data, config, champion reference, this code). `champion`
    # names the baseline, so a moved champion alias re-runs the comparison, and an unchanged
    # re-run is served from the cache. A result measured against another champion than the
    # reference is refused (EVAL_CHAMPION_MOVED), never cached.
    cache=Cache(version=code_version(*COMMON, "tasks/evaluate.py", "eval", "serving",
                                     "registry",
                                     packages=("lm-eval", "torch", "transformers")),
                ignored_inputs=("prices",)),
    retries=1,
    requests=Resources(cpu="2", mem="8Gi"),
    enable_deck=True,
    deck_fields=STAGE_DECK_FIELDS,
    secret_requests=[*JUDGE_SECRETS, *MLFLOW_SECRETS],
)
def evaluate(model: TrainedModel, dataset: ValidatedDataset, config: EvalConfig,
             champion: ChampionReference, prices: CostConfig) -> EvalReport:
    """`champion`: `champion_reference`'s answer, read just before this stage."""
    from eval.champion import check_compared_against
    from eval.report import overview_facts
    from eval.run import evaluate_model

    with stage_shell(_STAGE, "Evaluation", prices) as run:
        summary = evaluate_model(
            model_dir=Path(model.model_dir.download()), model_digest=model.model_digest,
            training_run_id=model.mlflow_run_id,
            eval_split=Path(dataset.files.download()) / "eval.jsonl",
            eval_split_digest=dataset.split_digests.get("eval"), config=config,
            settings=load_settings(), work_dir=Path(tempfile.mkdtemp(prefix="shipyard-eval-")),
            # A Flyte secret is mounted as this environment variable; read here, at the edge.
            judge_api_key=os.environ.get(config.judge.api_key_env) or None)
        check_compared_against(champion, config.registered_model_name,
                               summary.champion_version, summary.champion_digest)
        report = json.loads(summary.report_path.read_text())
        judge_usage = (report.get("judge") or {}).get("usage") or {}
        run.cost.extra_usd = float(judge_usage.get("cost") or 0.0)
        run.cost.extra_usd_basis = "judge tokens at eval.judge.price_per_1k_*_tokens"
        run.cost.mlflow_run_id = summary.mlflow_run_id or None
        run.cost.mlflow_tracking_uri = load_settings().mlflow_tracking_uri
        run.publish(summary.report_html, json_path=summary.report_path,
                    title=f"Evaluation: {summary.outcome}",
                    status="succeeded" if summary.outcome == "PASS" else "failed",
                    facts=overview_facts(report))
        summary.require_pass()  # a gate FAIL: its report above stays the stage's report
        return to_eval_report(summary)


def to_eval_report(summary: EvalSummary) -> EvalReport:
    return from_result(EvalReport, summary, gate_outcome=summary.outcome,
                       gate_reasons=list(summary.reasons), gate_mode=summary.mode,
                       judge_non_gating_reasons=list(summary.judge_non_gating_reasons),
                       report_json=FlyteFile(str(summary.report_path)))
